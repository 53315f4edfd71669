"""The off-site scenario (tests/support/offsite_scenario.py) on LocalStack,
inside a private network namespace.

Run by tests/functional/test_offsite_servers.py as
``unshare -n <project python> offsite_localstack.py <localstack python>``:
LocalStack binds 0.0.0.0:4566 whatever it is told, so it only ever runs in a
namespace of its own, where nothing but this process can reach it. Prints
one JSON object on stdout.

LocalStack (community) enforces no IAM and no bucket policy, so the
"put-only" identity here has full rights: what is refused is refused by
Object Lock itself, the part moto does not implement (it does not lock
multipart uploads, lets COMPLIANCE retention be shortened and versioning be
suspended).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ENDPOINT = "http://127.0.0.1:4566"


def start(python: str, root: str):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = dict(
        os.environ,
        SERVICES="s3,iam,sts",
        GATEWAY_LISTEN="127.0.0.1:4566",
        LOCALSTACK_HOST="127.0.0.1:4566",
        # Host mode: every file under FILESYSTEM_ROOT (in "container" mode,
        # which it guesses on a machine that is itself a container, it
        # would write /var/lib/localstack).
        OVERRIDE_IN_DOCKER="0",
        FILESYSTEM_ROOT=os.path.join(root, "fs"),
        LOCALSTACK_VOLUME_DIR=os.path.join(root, "volume"),
        TMPDIR=os.path.join(root, "tmp"),
        DNS_ADDRESS="0",
        SKIP_SSL_CERT_DOWNLOAD="1",
        DISABLE_EVENTS="1",
    )
    os.makedirs(env["TMPDIR"])
    log = open(os.path.join(root, "localstack.log"), "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([python, "-m", "localstack.runtime.main"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{ENDPOINT}/_localstack/health", timeout=2) as resp:
                health = json.loads(resp.read())
            if health.get("services", {}).get("s3") in ("available", "running"):
                return proc, health.get("version")
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            text = open(os.path.join(root, "localstack.log"), errors="replace").read()[-3000:]
            raise RuntimeError("LocalStack did not start: " + text)
        time.sleep(0.5)


def main() -> int:
    import boto3

    from snap_core import provision
    from tests.support import offsite_scenario

    root = tempfile.mkdtemp(prefix="snap-localstack-")
    proc = None
    out: dict = {}
    try:
        started = time.monotonic()
        proc, version = start(sys.argv[1], root)
        for var, val in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                         ("AWS_EC2_METADATA_DISABLED", "true")):  # fmt: skip
            os.environ[var] = val
        keys = ("test", "test")
        server = offsite_scenario.Server(
            name="localstack",
            endpoint=ENDPOINT,
            admin_session=boto3.session.Session(region_name="us-east-1"),
            settings={
                "bucket": "snap-localstack",
                "prefix": "snap",
                "region": "us-east-1",
                "endpoint_url": ENDPOINT,
                "force_path_style": True,
                "admins": ["arn:aws:iam::000000000000:root"],
                "identity": {"type": "user", "name": "snap-backup"},
                "confirm_irreversible": provision.CONFIRM_PHRASE,
            },  # fmt: skip
            putonly_keys=lambda: keys,
            reader_keys=lambda: keys,
            notes=["LocalStack community enforces no IAM and no bucket policy: every identity has full rights"],
        )
        work = pathlib.Path(root) / "scenario"
        work.mkdir()
        out = offsite_scenario.run(server, work)
        out["localstack"] = version
        out["start_seconds"] = round(time.monotonic() - started, 1)
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        import traceback

        out["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
