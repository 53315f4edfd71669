"""Object Lock semantics of a provisioned bucket, on LocalStack.

moto does not lock multipart uploads, lets COMPLIANCE retention be shortened
and lets versioning be suspended, so those rules are checked on LocalStack
(``localstack-core``), which enforces them. LocalStack needs a newer Python
than the project's 3.11 (2026.3.0 imports ``warnings.deprecated``: 3.13), so
it runs from its own virtualenv, named by ``SNAP_LOCALSTACK_PYTHON``; without
it this test is skipped and says why. It binds 0.0.0.0 whatever it is told,
so it only runs inside a private network namespace (``unshare -n``), which
the helper script and everything it starts share and nothing else can reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

LS_PYTHON = os.environ.get("SNAP_LOCALSTACK_PYTHON")

pytestmark = [
    pytest.mark.skipif(
        not LS_PYTHON,
        reason="SNAP_LOCALSTACK_PYTHON is not set (a Python >= 3.13 with localstack-core[runtime]==2026.3.0)",
    ),
    pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare (util-linux)"),
]


def test_provisioned_bucket_enforces_object_lock_on_localstack():
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(REPO / "tests" / "support" / "offsite_localstack.py"), LS_PYTHON],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    assert out["provision"]["result"] is True, out["provision"]
    assert out["second_run"] == {"result": True, "plan": []}
    # verify-offsite reads LocalStack's configuration back: no drift.
    assert out["verify"]["ok"], out["verify"]["drift"]
    for name, lock in out["locks"].items():
        assert lock["mode"] == "COMPLIANCE", (name, lock)
        assert lock["days"] >= 90, (name, lock)
    assert out["locks"]["multipart archive"]["parts"] == 3
    refused = {name: r for name, r in out["attempts"].items() if r["refused"]}
    allowed = {name: r for name, r in out["attempts"].items() if not r["refused"]}
    assert not allowed, f"LocalStack allowed: {allowed}"
    assert out["archive_still_there"]
    print(f"\nLocalStack {out['localstack']}: {len(refused)} lock-breaking calls refused with full rights: {sorted(refused)}")
