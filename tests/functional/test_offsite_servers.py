"""The same off-site scenario on three S3 servers: moto, Ceph RGW, LocalStack.

tests/support/offsite_scenario.py provisions a bucket with snap.provision,
archives with the real pipeline as the put-only identity, reads every lock
back as the administrator, audits and restores, then tries every way of
losing or bloating an archive. This module runs it per server and says, where
the servers disagree, which behaviour snap relies on:

- **multipart locks**: LocalStack keeps them; Ceph RGW 16 (tracker 63724)
  and moto store the object unlocked. snap relies on none of them: it reads
  the lock back and sets it (the run's record says ``repaired``).
- **shortening COMPLIANCE**: refused by Ceph and LocalStack (and AWS); moto
  allows it. snap relies on the server refusing it (AWS, Ceph, MinIO do).
- **overwriting a key**: every server keeps the first version (a new version
  on top); Ceph ignores ``If-None-Match: *`` on versioned buckets. snap
  relies on unique keys and the version ids its manifests record.
- **lock-bombing** (100-year retention by the backup identity): refused by a
  policy condition only AWS evaluates here; moto ignores conditions,
  LocalStack community has no policy engine, and Ceph RGW 16 does not
  evaluate ``s3:object-lock-*`` keys (measured): there the bucket quota
  bounds it (docs/OFFSITE.md). The static checker proves the policy.

Ceph RGW: Debian's radosgw + ceph-mon + ceph-osd on 127.0.0.1
(tests/support/ceph.py, session fixture). LocalStack: in a private network
namespace, skipped without ``SNAP_LOCALSTACK_PYTHON`` (see
tests/support/localstack_venv.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from snap_core import provision
from tests.conftest import REPO
from tests.support import moto_server, offsite_scenario

RESULTS: dict[str, dict] = {}
LS_PYTHON = os.environ.get("SNAP_LOCALSTACK_PYTHON")

# What each server does with each call; "refused" is what AWS does for all of
# them (the lock-bomb rows: by snap's bucket policy).
EXPECTED = {
    "put-only: DeleteObject of the locked archive version": {"*": "refused"},
    "put-only: PutObjectRetention shortening it to 1 day": {"*": "refused", "moto": "allowed"},
    # Allowed where the identity has the repair right and nothing bounds it
    # (moto: conditions ignored; LocalStack: no policy engine); refused on
    # Ceph, where it has no PutObjectRetention (retention_repair off).
    "put-only: PutObjectRetention extending it by 100 years (lock-bomb)": {"*": "allowed", "ceph": "refused"},
    "put-only: PutObject locked for 100 years (lock-bomb)": {"*": "allowed"},
    "put-only: PutObject over the archive's key (no If-None-Match)": {"*": "allowed"},
    # Ceph RGW 16 ignores If-None-Match on versioned buckets: a second version
    # lands on top and the first stays (checked below on every server).
    "put-only: snap's own upload over the archive's key (If-None-Match: *)": {"*": "refused", "ceph": "allowed"},
    # No test server refuses it (moto and LocalStack judge no conditions, Ceph
    # knows no s3:if-none-match); AWS refuses it by the bucket policy.
    "put-only: a forged manifest over the manifest's key": {"*": "allowed"},
    "admin: DeleteObject of the locked archive version": {"*": "refused"},
    "admin: DeleteObjects of the locked versions": {"*": "refused"},
    "admin: PutObjectRetention shortening COMPLIANCE": {"*": "refused", "moto": "allowed"},
    "admin: PutObjectRetention COMPLIANCE to GOVERNANCE": {"*": "refused", "moto": "allowed"},
    # moto, after letting COMPLIANCE become GOVERNANCE: the archive is gone.
    "admin: DeleteObject with BypassGovernanceRetention": {"*": "refused", "moto": "allowed"},
    "admin: PutBucketVersioning Suspended": {"*": "refused", "moto": "allowed"},
    "admin: DeleteBucket": {"*": "refused"},
}


@pytest.fixture(scope="module")
def moto():
    server = moto_server.MotoServer()
    try:
        admin_arn, key_id, secret = moto_server.bootstrap_admin(server)
        server.enable_auth()
        server.admin_arn = admin_arn
        server.admin_session = moto_server.session(key_id, secret)
        yield server
    finally:
        server.stop()


def moto_server_for(moto) -> offsite_scenario.Server:
    settings = {
        "bucket": "snap-scenario", "prefix": "snap", "region": "us-east-1", "endpoint_url": moto.endpoint,
        "force_path_style": True, "admins": [moto.admin_arn], "identity": {"type": "user", "name": "snap-scenario"},
        "confirm_irreversible": provision.CONFIRM_PHRASE,
        "archive_min_size": 0,  # moto drops lifecycle size filters
        # moto stores multipart uploads unlocked: the identity may set the lock again.
        "retention_repair": True,
    }  # fmt: skip
    admin_s3 = moto_server.client(moto.admin_session, "s3", moto.endpoint)
    keys = {}

    def putonly():
        if "put" not in keys:
            key = moto_server.client(moto.admin_session, "iam", moto.endpoint).create_access_key(
                UserName="snap-scenario"
            )
            keys["put"] = (key["AccessKey"]["AccessKeyId"], key["AccessKey"]["SecretAccessKey"])
        return keys["put"]

    creds = moto.admin_session.get_credentials()
    return offsite_scenario.Server(
        name="moto",
        endpoint=moto.endpoint,
        admin_session=moto.admin_session,
        settings=settings,
        putonly_keys=putonly,
        reader_keys=lambda: (creds.access_key, creds.secret_key),
        # moto applies every bucket-policy statement to everyone and ignores
        # conditions: keep what it can evaluate (the static checker proves the rest).
        after_provision=lambda: admin_s3.put_bucket_policy(
            Bucket="snap-scenario",
            Policy=json.dumps(moto_evaluable(provision.bucket_policy(provision.load_spec(settings)))),
        ),
        # ... and it would apply the denies to the administrator too: judge Object Lock itself.
        before_attacks=lambda: admin_s3.delete_bucket_policy(Bucket="snap-scenario"),
        notes=["moto judges IAM identity policies only (bucket policy reduced to what it can evaluate)"],
    )


def moto_evaluable(policy: dict) -> dict:
    keep = [s for s in policy["Statement"] if not {"s3:PutObject", "s3:*"} & set(s["Action"])]
    return dict(policy, Statement=keep)


def ceph_server_for(ceph) -> offsite_scenario.Server:
    settings = {
        "provider": "ceph", "bucket": "snap-scenario", "prefix": "snap", "region": "us-east-1", "chains": True,
        "endpoint_url": ceph.endpoint, "identity": {"type": "user", "name": ceph.BACKUP},
        "admins": [ceph.arn(ceph.ADMIN)],
        "confirm_irreversible": provision.CONFIRM_PHRASE,
    }  # fmt: skip
    return offsite_scenario.Server(
        name="ceph",
        endpoint=ceph.endpoint,
        admin_session=ceph.session(ceph.ADMIN),
        settings=settings,
        putonly_keys=lambda: ceph.keys[ceph.BACKUP],
        reader_keys=lambda: ceph.keys[ceph.ADMIN],
        notes=["audit and restore read as the bucket owner, an administrator (granted by the bucket policy)"],
    )


def run_localstack() -> dict:
    if not LS_PYTHON:
        pytest.skip("SNAP_LOCALSTACK_PYTHON is not set (a Python >= 3.13 with localstack-core[runtime]==2026.3.0)")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux)")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(REPO / "tests" / "support" / "offsite_localstack.py"), LS_PYTHON],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    return out


@pytest.mark.parametrize("name", ["moto", "ceph", "localstack"])
def test_archive_lock_audit_restore_and_attacks(name, request, tmp_path, capsys):
    if name == "localstack":
        out = run_localstack()
    else:
        server = (
            moto_server_for(request.getfixturevalue("moto"))
            if name == "moto"
            else ceph_server_for(request.getfixturevalue("ceph"))
        )
        out = offsite_scenario.run(server, tmp_path)
    RESULTS[name] = out
    # Provisioning: applied, idempotent, no drift.
    assert out["provision"]["second_run"] == [], out["provision"]
    assert out["provision"]["verify"]["ok"] or name == "moto", out["provision"]["verify"]["drift"]
    # Every archive snap calls done is, read back by the administrator,
    # COMPLIANCE until at least what was asked: held, or repaired by snap.
    statuses = {lock["key"].rsplit(".", 1)[-1]: lock["status"] for lock in out["archive"]["locks"]}
    assert out["archive"]["parts"] >= 2
    # moto drops the multipart lock (snap repairs it: retention_repair on);
    # Ceph keeps only the bucket default there, a day longer than retain_days.
    assert statuses == {"gpg": {"moto": "repaired"}.get(name, "held"), "json": "held"}, statuses
    if statuses["gpg"] == "repaired":
        # moto: stored with no lock at all; Ceph: with the bucket's default
        # retention (counted from the upload), shorter than the date asked.
        assert "lock repaired:" in out["archive"]["stderr"], out["archive"]["stderr"]
    assert all(v["ok"] for v in out["readback"].values()), out["readback"]
    # The audit reads every lock back the same way; the restore is bit-exact.
    assert out["audit"]["returncode"] == 0 and out["audit"]["record"]["ok"], out["audit"]
    assert out["restore"]["matches"], out["restore"]
    # The overwrite and a forged manifest naming it (finding 4 of the cold
    # attack): readers take the first versions, say TAMPERING, and restore
    # what snap wrote.
    forged = out["forged"]
    assert forged["forged_archive_version"], forged
    row = forged["row"]
    assert row["tampered"] and "TAMPERING" in row["tampered"] and "2 versions" in row["tampered"], row
    assert row["manifest_version_id"] == row["genuine_manifest_version"], row
    assert row["version_id"] == out["archive"]["version_id"] and row["server_snapshots"] == {"db1": 2}, row
    assert forged["audit"]["returncode"] != 0 and any("TAMPERING" in p for p in forged["audit"]["problems"]), forged
    assert forged["restore"]["matches"], forged["restore"]
    # A chain on this server: every piece locked at least as long as the link
    # needs it (read back by the administrator), the newest link restored.
    chain = out["chain"]
    assert chain["links"] == [0, 1] and all(p["ok"] for p in chain["pieces"]), chain
    assert chain["restore"]["matches"], chain["restore"]
    # The calls tried: what each server did, against what snap relies on.
    for call, want in EXPECTED.items():
        got = out["calls"][call]
        expected = want.get(name, want["*"])
        assert got.startswith(expected), f"{name}: {call}: {got}, expected {expected}"
    # Whatever was tried, the first version of the archive is still there,
    # whole and locked: on every server that implements COMPLIANCE (moto lets
    # the administrator turn it into GOVERNANCE and delete it: never trust it).
    if name != "moto":
        assert out["after"]["first_version_listed"] and out["after"]["first_version_size"], out["after"]
        assert out["after"]["first_version_locked"], out["after"]
    else:
        assert not out["after"]["first_version_listed"], "moto now keeps COMPLIANCE: count it as a real server"
    # An object put with no lock header at all is locked by the bucket's default.
    assert out["bucket_default_lock"] == "COMPLIANCE" or name == "moto", out["bucket_default_lock"]
    with capsys.disabled():
        print(f"\n{name}: archive in {out['archive']['seconds']}s, locks {statuses}, "
              f"{sum(v.startswith('refused') for v in out['calls'].values())}/{len(out['calls'])} calls refused\n"
              f"{name}: after the overwrite and a forged manifest, readers say: {row['tampered'][:200]}...; "
              f"audit exit {forged['audit']['returncode']}; restore of the first version bit-exact: "
              f"{forged['restore']['matches']}\n"
              f"{name}: chain base + link ({chain['link_bytes']} bytes, multipart), every piece locked as "
              f"needed (read back by the administrator): {all(p['ok'] for p in chain['pieces'])}")  # fmt: skip


def test_the_table_of_calls_per_server(capsys):
    if not RESULTS:
        pytest.skip("no server ran")
    with capsys.disabled():
        print("\n" + offsite_scenario.table(RESULTS))
    assert set(RESULTS) <= {"moto", "ceph", "localstack"}
