"""One off-site scenario, the same on every S3 server (moto, Ceph RGW, LocalStack).

``run(server)`` provisions a bucket with ``snap.provision`` as the
administrator, archives a small history with the real pipeline
(``python -m snap_core archive``) as the backup server's put-only identity,
reads every lock back itself, audits (``verify``) and restores one server
from off-site with the offline key, then tries what an attacker (or a fat
finger) would: deleting and shortening locked versions, downgrading the
mode, suspending versioning, overwriting an archive's key, and locking new
and existing objects for a century (lock-bombing). Every call's outcome is
returned as data, so the test can print the table per server and assert what
snap relies on. For LocalStack it runs inside a private network namespace
(tests/support/offsite_localstack.py); for moto and Ceph in the test process.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

PREFIX = "snap/backup1"
DAY = 86400


@dataclass
class Server:
    """What the scenario needs from a server."""

    name: str
    endpoint: str
    admin_session: Any  # boto3 session of the bucket's administrator
    settings: dict  # snap:offsite settings for snap.provision
    #: After provisioning: the put-only identity's (access key, secret).
    putonly_keys: Callable[[], tuple[str, str]]
    #: Credentials for audit and restore (a read-capable identity).
    reader_keys: Callable[[], tuple[str, str]]
    #: Called after provisioning (moto: replace its policy by what it can evaluate).
    after_provision: Callable[[], None] = lambda: None
    #: Called before the attack calls (moto: drop the bucket policy it would
    #: apply to the administrator too, so Object Lock itself is judged).
    before_attacks: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)


def _client(session, endpoint, service="s3"):
    from botocore.config import Config

    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    return session.client(service, endpoint_url=endpoint, config=cfg)


def _session(keys):
    import boto3

    return boto3.session.Session(aws_access_key_id=keys[0], aws_secret_access_key=keys[1], region_name="us-east-1")


def _outcome(call) -> str:
    from botocore.exceptions import ClientError

    from snap_core import errors

    try:
        out = call()
    except ClientError as exc:
        return f"refused ({exc.response['Error'].get('Code') or exc.response['ResponseMetadata']['HTTPStatusCode']})"
    except errors.Error as exc:  # snap's own upload
        return f"refused ({type(exc).__name__})"
    if isinstance(out, dict) and out.get("Errors") and not out.get("Deleted"):
        return f"refused ({out['Errors'][0].get('Code')})"
    return "allowed"


def _snap(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snap_core", "--json", *map(str, args)], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL)  # fmt: skip


def run(server: Server, work: pathlib.Path) -> dict:
    from snap_core import OffsiteTarget, provision
    from tests.support.gpg import GnuPG
    from tests.support.history import make_history
    from tests.support.treegen import describe

    out: dict[str, Any] = {"server": server.name, "notes": list(server.notes)}
    # The same retention for the bucket (provisioning) and the archive run.
    server.settings.setdefault("retain_days", 91)
    bucket = server.settings["bucket"]
    admin = _client(server.admin_session, server.endpoint)

    # 1. Provisioning, as the administrator; a second run changes nothing.
    first = provision.provision(server.settings, session=server.admin_session)
    assert first["result"] is True, first["comment"]
    again = provision.provision(server.settings, session=server.admin_session)
    out["provision"] = {"applied": first["applied"], "second_run": [s["step"] for s in again["plan"]],
                        "notes": first["notes"], "verify": provision.verify(server.settings, session=server.admin_session)}  # fmt: skip
    server.after_provision()

    # 2. Credentials the pipeline reads from a profile file (never the environment).
    creds = work / "credentials"
    lines = []
    for profile, keys in (("putonly", server.putonly_keys()), ("reader", server.reader_keys())):
        lines += [f"[{profile}]", f"aws_access_key_id = {keys[0]}", f"aws_secret_access_key = {keys[1]}", ""]
    creds.write_text("\n".join(lines))
    creds.chmod(0o600)
    base = {"bucket": bucket, "region": "us-east-1", "endpoint_url": server.endpoint, "credentials_file": str(creds),
            "part_size": 5 << 20}  # fmt: skip
    putonly, reader = dict(base, profile="putonly"), dict(base, profile="reader")
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(var, None)

    # 3. An archive with the real pipeline: multipart (a 7 MiB random file), then its manifest.
    history = work / "history"
    made = make_history(history, servers=("db1",), snapshots=("recent.1", "recent.0"), big=1 << 16)
    (made["recent.0"]["db1"] / "data" / "random.bin").write_bytes(os.urandom(7 << 20))
    with GnuPG() as gpg:
        pub = gpg.export_public(work / "archive-key.asc")
        secret = gpg.export_secret(work / "offline.asc")
        config = work / "archive.json"
        config.write_text(json.dumps({
            "minion_id": "backup1", "history_dir": str(history), "work_dir": str(work / "work"),
            "state_dir": str(work / "state"), "recipients": [{"file": str(pub)}], "target": putonly,
            "prefix": PREFIX, "retain_days": 91, "storage_class": "STANDARD", "pack": {"compressor": "zstd", "level": 1},
        }))  # fmt: skip
        started = time.time()
        proc = _snap("archive", "--config", config, env=env)
        assert proc.returncode == 0, proc.stderr
        rec = json.loads(proc.stdout)
        out["archive"] = {"seconds": round(time.time() - started, 1), "parts": rec["manifest"]["archive"]["parts"],
                          "locks": rec["locks"], "stderr": proc.stderr[-2000:],
                          "version_id": rec["manifest"]["archive"]["version_id"]}  # fmt: skip
        asked = datetime.datetime.fromtimestamp(started + 92 * DAY, datetime.timezone.utc) - datetime.timedelta(
            minutes=5
        )
        archive = rec["manifest"]["archive"]
        manifest_key = rec["manifest_key"]
        manifest_version = next(lock["version_id"] for lock in rec["locks"] if lock["key"] == manifest_key)

        # 4. Read back by the administrator, not trusting snap's own report.
        readback = {}
        for name, key, version in (("archive", archive["key"], archive["version_id"]),
                                   ("manifest", manifest_key, manifest_version)):  # fmt: skip
            r = admin.get_object_retention(Bucket=bucket, Key=key, VersionId=version)["Retention"]
            readback[name] = {"mode": r["Mode"], "until": r["RetainUntilDate"].isoformat(),
                              "ok": r["Mode"] == "COMPLIANCE" and r["RetainUntilDate"] >= asked}  # fmt: skip
        out["readback"] = readback

        # 5. The audit and a restore, as the reader.
        state = work / "verify-state"
        audit = _snap("verify", "--target", json.dumps(reader), "--prefix", PREFIX + "/", "--state-dir", state,
                      "--quiet", env=env)  # fmt: skip
        out["audit"] = {"returncode": audit.returncode, "stderr": audit.stderr[-1500:],
                        "record": json.loads((state / "verify-last.json").read_text())["audit"]}  # fmt: skip
        dest = work / "restored"
        restored = _snap("restore", "--target", json.dumps(reader), "--prefix", PREFIX, "--key", secret,
                         "--server", "db1", "--to", dest, "--quiet", env=env)  # fmt: skip
        out["restore"] = {"returncode": restored.returncode, "stderr": restored.stderr[-1500:],
                          "matches": restored.returncode == 0
                          and describe(dest) == describe(made["recent.0"]["db1"], fake_super=True)}  # fmt: skip

        out["chain"] = _chain(server, admin, putonly, reader, env, work, pub, secret, history, made)

    # 6. What an attacker (or a fat finger) tries.
    bomb = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=36500)
    put = _client(_session(server.putonly_keys()), server.endpoint)
    key, version = archive["key"], archive["version_id"]
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    calls = {
        "put-only: DeleteObject of the locked archive version": lambda: put.delete_object(
            Bucket=bucket, Key=key, VersionId=version),
        "put-only: PutObjectRetention shortening it to 1 day": lambda: put.put_object_retention(
            Bucket=bucket, Key=key, VersionId=version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon}),
        "put-only: PutObjectRetention extending it by 100 years (lock-bomb)": lambda: put.put_object_retention(
            Bucket=bucket, Key=key, VersionId=version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": bomb}),
        "put-only: PutObject locked for 100 years (lock-bomb)": lambda: put.put_object(
            Bucket=bucket, Key=f"{PREFIX}/bomb", Body=b"x", ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=bomb, ChecksumAlgorithm="SHA256"),
        "put-only: PutObject over the archive's key (no If-None-Match)": lambda: put.put_object(
            Bucket=bucket, Key=key, Body=b"replacement", ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=92),
            ChecksumAlgorithm="SHA256"),
        # What snap itself sends (If-None-Match: *, lock headers) to a key that exists.
        "put-only: snap's own upload over the archive's key (If-None-Match: *)": lambda: OffsiteTarget(
            putonly).put_bytes(b"replacement", key, storage_class="STANDARD", retain_days=91),
        "admin: DeleteObject of the locked archive version": lambda: admin.delete_object(
            Bucket=bucket, Key=key, VersionId=version),
        "admin: DeleteObjects of the locked versions": lambda: admin.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": key, "VersionId": version},
                                               {"Key": manifest_key, "VersionId": manifest_version}]}),
        "admin: PutObjectRetention shortening COMPLIANCE": lambda: admin.put_object_retention(
            Bucket=bucket, Key=key, VersionId=version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon}),
        "admin: PutObjectRetention COMPLIANCE to GOVERNANCE": lambda: admin.put_object_retention(
            Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": bomb}),
        "admin: DeleteObject with BypassGovernanceRetention": lambda: admin.delete_object(
            Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True),
        "admin: PutBucketVersioning Suspended": lambda: admin.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}),
        "admin: DeleteBucket": lambda: admin.delete_bucket(Bucket=bucket),
    }  # fmt: skip
    # The put-only identity's calls first, then what a reader makes of the
    # result (before the administrator's calls, which on moto delete things).
    server.before_attacks()
    out["calls"] = {name: _outcome(call) for name, call in calls.items() if name.startswith("put-only")}
    out["forged"] = _forge_and_read(server, admin, put, reader, env, work, secret, made, key, version, manifest_key)
    out["calls"]["put-only: a forged manifest over the manifest's key"] = out["forged"].pop("call")
    out["calls"].update({name: _outcome(call) for name, call in calls.items() if not name.startswith("put-only")})
    # An object put with no lock header at all gets the bucket's default retention.
    bare = admin.put_object(Bucket=bucket, Key=f"{PREFIX}/no-headers", Body=b"x", ChecksumAlgorithm="SHA256")
    try:
        kw = {"VersionId": bare["VersionId"]} if bare.get("VersionId") else {}
        r = admin.get_object_retention(Bucket=bucket, Key=f"{PREFIX}/no-headers", **kw)
        out["bucket_default_lock"] = r["Retention"]["Mode"]
    except Exception as exc:  # noqa: BLE001 - reported as data
        out["bucket_default_lock"] = f"none ({exc})"
    # What stands afterwards: the first version of the archive, locked, whole.
    from botocore.exceptions import ClientError

    versions = [v["VersionId"] for v in admin.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
                if v["Key"] == key]  # fmt: skip
    try:
        r = admin.get_object_retention(Bucket=bucket, Key=key, VersionId=version)["Retention"]
        head = admin.head_object(Bucket=bucket, Key=key, VersionId=version)
        locked, whole = (
            r["Mode"] == "COMPLIANCE" and r["RetainUntilDate"] >= asked,
            head["ContentLength"] == archive["size"],
        )
    except ClientError:
        locked = whole = False
    out["after"] = {"first_version_locked": locked, "first_version_size": whole,
                    "versions_of_the_key": len(versions), "first_version_listed": version in versions}  # fmt: skip
    return out


def _chain(server, admin, putonly, reader, env, work, pub, secret, history, made) -> dict:
    """Issue 13 on this server: a chain (a base, then a link whose data piece
    is a multipart upload) as the put-only identity; every piece's lock read
    back by the administrator at the version the manifest names, against the
    retain-until the link relies on; the link restored as the reader."""
    from tests.support.treegen import describe

    bucket = server.settings["bucket"]
    config = work / "chain.json"
    config.write_text(json.dumps({
        "minion_id": "backup1", "history_dir": str(history), "work_dir": str(work / "chain-work"),
        "state_dir": str(work / "chain-state"), "recipients": [{"file": str(pub)}], "target": putonly,
        "prefix": PREFIX, "retain_days": 91, "storage_class": "STANDARD", "pack": {"compressor": "zstd", "level": 1},
        "chain": {"enabled": True},
    }))  # fmt: skip
    # A chain names snapshots by their time: make_history gave them one.
    for age, snap in ((7200, "recent.1"), (3600, "recent.0")):
        os.utime(history / snap, (time.time() - age,) * 2)
    runs = []
    for step in ("base", "link"):
        if step == "link":  # a new snapshot holding 7 MiB of new data: the link's data piece is multipart
            # (recent.0 stays as it is: the steps after this one compare with it)
            subprocess.run(["cp", "-al", str(history / "recent.0"), str(history / "daily.0")], check=True)
            (history / "daily.0" / "db1" / "data" / "new.bin").write_bytes(os.urandom(7 << 20))
            os.utime(history / "daily.0", (time.time() + 60,) * 2)
        proc = _snap("archive", "--config", config, env=env)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    link = runs[-1]["chain"]
    pieces = []
    for p in link["pieces"]:
        r = admin.get_object_retention(Bucket=bucket, Key=p["key"], VersionId=p["version_id"])["Retention"]
        want = datetime.datetime.fromtimestamp(p["retain_until_unix"], datetime.timezone.utc)
        pieces.append({"piece": p["name"], "mode": r["Mode"], "until": r["RetainUntilDate"].isoformat(),
                       "ok": r["Mode"] == "COMPLIANCE" and r["RetainUntilDate"] >= want})  # fmt: skip
    dest = work / "chain-restored"
    restored = _snap("restore", "--target", json.dumps(reader), "--prefix", PREFIX + "/", "--key", secret,
                     "--server", "db1", "--to", dest, "--quiet", env=env)  # fmt: skip
    newest = next(s["name"] for s in sorted(link["snapshots"], key=lambda s: -s["mtime"]))
    return {
        "links": [r["chain"]["chain"]["link"] for r in runs],
        "link_bytes": sum(p["size"] for p in link["pieces"] if p["link"] == link["chain"]["link"]),
        "pieces": pieces,
        "restore": {"returncode": restored.returncode, "stderr": restored.stderr[-1500:], "snapshot": newest,
                    "matches": restored.returncode == 0
                    and describe(dest) == describe(history / "daily.0" / "db1", fake_super=True)},
    }  # fmt: skip


def _forge_and_read(server, admin, put, reader, env, work, secret, made, key, version, manifest_key) -> dict:
    """Finding 4 of the cold attack on issue 12: where the archive's key was
    overwritten (every test server lets the put-only identity do that; Ceph RGW
    16 even with If-None-Match), forge its manifest too: a second version that
    names the new archive version and half the history. Then read as the
    reader: the listing, the audit and a restore of that archive."""
    from tests.support.treegen import describe

    bucket = server.settings["bucket"]
    listed = admin.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    forged_version = next((v["VersionId"] for v in listed if v["Key"] == key and v["VersionId"] != version), None)
    genuine = admin.list_object_versions(Bucket=bucket, Prefix=manifest_key).get("Versions", [])
    first = min((v for v in genuine if v["Key"] == manifest_key), key=lambda v: v["LastModified"])
    manifest = json.loads(
        admin.get_object(Bucket=bucket, Key=manifest_key, VersionId=first["VersionId"])["Body"].read()
    )
    manifest["archive"]["version_id"] = forged_version or "forged"
    manifest["snapshots"] = manifest["snapshots"][:1]
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=92)
    time.sleep(1.1)  # a later LastModified than the genuine version, to the second
    out: dict[str, Any] = {"forged_archive_version": forged_version, "call": _outcome(lambda: put.put_object(
        Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest).encode(), ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256"))}  # fmt: skip
    listing = _snap("restore", "list", "--target", json.dumps(reader), "--prefix", PREFIX + "/",
                    "--quiet", env=env)  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    row = next(r for r in json.loads(listing.stdout) if r["key"] == key)
    out["row"] = {k: row.get(k) for k in ("version_id", "manifest_version_id", "server_snapshots", "tampered")}
    out["row"]["genuine_manifest_version"] = first["VersionId"]
    state = work / "verify-forged"
    audit = _snap("verify", "--target", json.dumps(reader), "--prefix", PREFIX + "/", "--state-dir", state,
                  "--quiet", env=env)  # fmt: skip
    out["audit"] = {"returncode": audit.returncode,
                    "problems": json.loads((state / "verify-last.json").read_text())["audit"]["problems"]}  # fmt: skip
    dest = work / "restored-after-forgery"
    restored = _snap("restore", "--target", json.dumps(reader), "--prefix", PREFIX, "--archive", key, "--key", secret,
                     "--server", "db1", "--to", dest, "--quiet", env=env)  # fmt: skip
    out["restore"] = {"returncode": restored.returncode, "stderr": restored.stderr[-1500:],
                      "matches": restored.returncode == 0
                      and describe(dest) == describe(made["recent.0"]["db1"], fake_super=True)}  # fmt: skip
    return out


def table(results: dict[str, dict]) -> str:
    """The calls tried, one row each, one column per server."""
    names = list(dict.fromkeys(n for r in results.values() for n in r.get("calls", {})))
    servers = list(results)
    width = max(len(n) for n in names) if names else 10
    lines = ["calls tried per server".ljust(width) + "".join(f" | {s:<22}" for s in servers)]
    lines.append("-" * len(lines[0]))
    for n in names:
        lines.append(n.ljust(width) + "".join(f" | {results[s].get('calls', {}).get(n, '-'):<22}" for s in servers))
    for label, get in (
        ("archive lock as stored (snap's read-back)", lambda r: ", ".join(f"{l['status']}" for l in r["archive"]["locks"])),
        ("archive + manifest read back by the admin", lambda r: "COMPLIANCE >= asked" if all(v["ok"] for v in r["readback"].values()) else "NOT LOCKED"),
        ("first version after the attempts", lambda r: "locked, whole" if r["after"]["first_version_locked"] and r["after"]["first_version_size"]
         else "whole, lock shortened" if r["after"]["first_version_size"] else "LOST"),
    ):  # fmt: skip
        lines.append(
            label.ljust(width)
            + "".join(f" | {get(results[s]) if 'archive' in results[s] else '-':<22}" for s in servers)
        )
    return "\n".join(lines)
