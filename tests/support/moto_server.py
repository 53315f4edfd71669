"""A real moto server on 127.0.0.1 for the off-site tests.

moto 5.2.5 (``moto[server]`` in requirements-dev.txt) enforces IAM identity
policies once ``POST /moto-api/reset-auth`` with body ``0`` switched auth on.
What it cannot judge is listed in FIELD-NOTES and in each test that meets it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.support.helpers import stop_process

REPO = pathlib.Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent():  # runs in the child before exec
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def enable_auth(endpoint: str) -> dict:
    """Switch moto's IAM enforcement on (every request must be allowed from now)."""
    # Flask would read a form-encoded body as form fields: say text/plain.
    req = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer.get("status") == "ok", answer
    return answer


class MotoServer:
    """moto's server (with the Object Lock reads of tests/support/moto_retention.py)
    on a free loopback port; :meth:`stop` ends it."""

    def __init__(self):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="snap-moto-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_retention", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto did not start on port {self.port}: {self.log_text()}")
                time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def enable_auth(self) -> dict:
        return enable_auth(self.endpoint)

    def stop(self):
        stop_process(self.proc)
        self.log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log.name)


def session(key_id: str, secret: str, token: str | None = None):
    import boto3

    return boto3.session.Session(
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=REGION,
    )


def client(sess, service: str, endpoint: str):
    from botocore.config import Config

    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    return sess.client(service, endpoint_url=endpoint, config=cfg)


def bootstrap_admin(moto: MotoServer, name: str = "snap-admin") -> tuple[str, str, str]:
    """Before auth is on (any key works then): an IAM user allowed everything.
    Returns (arn, key id, secret)."""
    iam = client(session("bootstrap", "bootstrap"), "iam", moto.endpoint)
    user = iam.create_user(UserName=name)["User"]
    iam.put_user_policy(
        UserName=name,
        PolicyName="admin",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return user["Arn"], key["AccessKeyId"], key["SecretAccessKey"]
