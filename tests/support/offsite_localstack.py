"""Object Lock checks against LocalStack, inside a private network namespace.

Run by tests/functional/test_provision_localstack.py as
``unshare -n <project python> offsite_localstack.py <localstack python>``:
LocalStack binds 0.0.0.0:4566 whatever it is told, so it only ever runs in a
namespace of its own, where nothing but this process can reach it. Prints
one JSON object on stdout.

LocalStack (community) does not enforce IAM, so everything below runs with
full rights: what is refused here is refused by Object Lock itself, the part
moto does not implement (it does not lock multipart uploads, lets COMPLIANCE
retention be shortened and versioning be suspended).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import snap_core
from snap_core import provision

ENDPOINT = "http://127.0.0.1:4566"
BUCKET = "snap-localstack"
PREFIX = "backups"
MIB = 1024 * 1024


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
    log = open(os.path.join(root, "localstack.log"), "wb")
    proc = subprocess.Popen([python, "-m", "localstack.runtime.main"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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
            raise RuntimeError("LocalStack did not start: " + open(os.path.join(root, "localstack.log"), errors="replace").read()[-3000:])
        time.sleep(0.5)


def refused(call, **kwargs) -> tuple[bool, str]:
    from botocore.exceptions import ClientError

    try:
        call(**kwargs)
    except ClientError as exc:
        return True, exc.response["Error"]["Code"]
    return False, "allowed"


def main() -> int:
    import boto3
    from botocore.config import Config

    ls_python = sys.argv[1]
    root = tempfile.mkdtemp(prefix="snap-localstack-")
    proc = None
    out: dict = {}
    try:
        proc, version = start(ls_python, root)
        out["localstack"] = version
        for var, val in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_EC2_METADATA_DISABLED", "true")):
            os.environ[var] = val
        sess = boto3.session.Session(region_name="us-east-1")
        s3 = sess.client("s3", endpoint_url=ENDPOINT, config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        settings = {
            "bucket": BUCKET, "prefix": PREFIX, "region": "us-east-1", "endpoint_url": ENDPOINT, "force_path_style": True,
            "admins": ["arn:aws:iam::000000000000:root"], "identity": {"type": "user", "name": "snap-backup"},
            "confirm_irreversible": provision.CONFIRM_PHRASE,
        }
        first = provision.provision(settings, session=sess)
        out["provision"] = {"result": first["result"], "applied": first["applied"], "comment": first["comment"]}
        second = provision.provision(settings, session=sess)
        out["second_run"] = {"result": second["result"], "plan": [s["step"] for s in second["plan"]]}
        out["verify"] = provision.verify(settings, session=sess)

        # snap's pipeline: a multipart archive and a manifest.
        target = snap_core.OffsiteTarget({"bucket": BUCKET, "region": "us-east-1", "endpoint_url": ENDPOINT,
                                          "force_path_style": True, "part_size": 5 * MIB})
        path = os.path.join(root, "archive")
        with open(path, "wb") as handle:
            handle.write(os.urandom(11 * MIB + 5))
        archive = target.put_file(path, snap_core.offsite_archive_key(PREFIX, ".sqfs.gpg"))
        manifest = target.put_bytes(b'{"m": 1}', snap_core.offsite_archive_key(PREFIX, ".json"))
        # An object uploaded with no lock header at all: the bucket default applies.
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/no-headers", Body=b"x", ChecksumAlgorithm="SHA256")
        bare = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/no-headers")
        now = time.time()
        heads = {}
        for name, key, vid in (("multipart archive", archive["key"], archive["version_id"]),
                               ("manifest", manifest["key"], manifest["version_id"]),
                               ("object without lock headers", f"{PREFIX}/no-headers", bare.get("VersionId"))):
            h = s3.head_object(Bucket=BUCKET, Key=key, VersionId=vid)
            until = h.get("ObjectLockRetainUntilDate")
            heads[name] = {"mode": h.get("ObjectLockMode"), "days": round((until.timestamp() - now) / 86400, 1) if until else None,
                           "key": key, "version": vid, "parts": archive["parts"] if name == "multipart archive" else 0}
        out["locks"] = heads
        a = heads["multipart archive"]
        attempts = {
            "DeleteObject of a locked version (multipart archive)": lambda: s3.delete_object(Bucket=BUCKET, Key=a["key"], VersionId=a["version"]),
            "DeleteObject of a locked version (no-header object)": lambda: s3.delete_object(
                Bucket=BUCKET, Key=heads["object without lock headers"]["key"], VersionId=heads["object without lock headers"]["version"]),
            "DeleteObject with BypassGovernanceRetention": lambda: s3.delete_object(
                Bucket=BUCKET, Key=a["key"], VersionId=a["version"], BypassGovernanceRetention=True),
            "DeleteObjects of locked versions": None,
            "PutObjectRetention shortening COMPLIANCE": lambda: s3.put_object_retention(
                Bucket=BUCKET, Key=a["key"], VersionId=a["version"], Retention={"Mode": "COMPLIANCE", "RetainUntilDate": now + 86400}),
            "PutObjectRetention to GOVERNANCE": lambda: s3.put_object_retention(
                Bucket=BUCKET, Key=a["key"], VersionId=a["version"], Retention={"Mode": "GOVERNANCE", "RetainUntilDate": now + 200 * 86400},
                BypassGovernanceRetention=True),
            "PutBucketVersioning Suspended": lambda: s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"}),
            "DeleteBucket": lambda: s3.delete_bucket(Bucket=BUCKET),
        }
        results = {}
        for name, call in attempts.items():
            if call is None:
                resp = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": a["key"], "VersionId": a["version"]}]})
                results[name] = {"refused": bool(resp.get("Errors")) and not resp.get("Deleted"), "code": (resp.get("Errors") or [{}])[0].get("Code")}
                continue
            ok, code = refused(lambda **_: call())
            results[name] = {"refused": ok, "code": code}
        out["attempts"] = results
        still = s3.head_object(Bucket=BUCKET, Key=a["key"], VersionId=a["version"])
        out["archive_still_there"] = still["ContentLength"] == 11 * MIB + 5
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        out["error"] = f"{type(exc).__name__}: {exc}"
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
