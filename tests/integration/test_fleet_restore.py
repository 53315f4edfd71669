"""Restore and proof on the real fleet: highstate → push → rotate →
`salt-run snap.archive` (to moto's S3 with IAM, the offline key and a drill
key as recipients) → wipe a server's data → restore from off-site with the
offline key, bit-exact with metadata; every failure leaves nothing behind;
the air-gapped path, sealed credentials, local history back onto the server
through Salt, the drill and the audit."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from tests.support.fleet import state_failures
from tests.support.gpg import GnuPG
from tests.support.moto import Moto
from tests.support.proxy import Proxy
from tests.support.restore import acl_text, restore_cli, restore_server_and_compare
from tests.support.treegen import describe

PY = sys.executable
PREFIX = "snap/backup1"


@pytest.fixture(scope="module")
def site(deployed):
    """The fleet archived once, to the offline key and a drill key."""
    fleet, _ = deployed
    work = pathlib.Path(tempfile.mkdtemp(prefix="snap-restore-test-", dir="/var/lib"))
    with Moto(prefix=PREFIX) as moto, GnuPG() as offline, GnuPG(uid="snap drill key <drill@snap.invalid>") as drill:
        read_target = moto.add_read_only_identity()
        offline_key = offline.export_secret(work / "offline-secret.asc")
        drill_key = drill.export_secret(work / "drill-secret.gpg", armor=False)
        pillar = {
            "snap": {
                "archive": {
                    "recipients": [offline.gpg("--armor", "--export", offline.fingerprint).stdout.decode(),
                                   drill.gpg("--armor", "--export", drill.fingerprint).stdout.decode()],
                    "target": moto.target(),
                    "retain_days": 95,
                    "pack": {"compressor": "zstd", "level": 3},
                    "chain": {"enabled": False},  # full archives here; chains: test_chain_archive
                },
                "verify": {"minion": "web1", "target": read_target, "prefix": PREFIX + "/",
                           "key": str(drill_key), "work_dir": str(work)},
            }
        }  # fmt: skip
        fleet.set_pillar(yaml.safe_dump(pillar))
        # These tests wipe and restore the servers' data; later modules get it back as it was.
        kept = work / "kept"
        kept.mkdir()
        for minion_id in fleet.clients:
            subprocess.run(["cp", "-a", str(fleet.client_data(minion_id)), str(kept / minion_id)], check=True)
        try:
            assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
            originals = {}
            for minion_id in fleet.clients:
                originals[minion_id] = describe(fleet.client_data(minion_id))
                subprocess.run(
                    [PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config",
                     str(fleet.root_of(minion_id) / "etc" / "snap" / "client.json")], check=True,
                )  # fmt: skip
            fleet.salt("snap.rotate", "recent", tgt="backup1")
            archived = fleet.run("snap.archive")
            assert archived["result"] is True, archived
            yield {
                "fleet": fleet, "moto": moto, "work": work, "target": read_target, "offline_key": offline_key,
                "drill_key": drill_key, "manifest": archived["manifest"], "originals": originals,
                "offline": offline, "drill": drill,
            }  # fmt: skip
        finally:
            for minion_id in fleet.clients:
                data = fleet.client_data(minion_id)
                shutil.rmtree(data, ignore_errors=True)
                subprocess.run(["cp", "-a", str(kept / minion_id), str(data)], check=True)
            fleet.set_pillar("")
            fleet.highstate(tgt="backup1")
            shutil.rmtree(work, ignore_errors=True)


def fresh(site, name) -> pathlib.Path:
    """A destination that does not exist yet, in its own parent."""
    parent = site["work"] / name
    parent.mkdir()
    return parent / "dest"


def target_arg(site):
    return json.dumps(site["target"])


# -- the round trip ----------------------------------------------------------------------


def test_round_trip_wipe_db1_restore_from_offsite_bit_exact(site):
    fleet = site["fleet"]
    data = fleet.client_data("db1")
    expected = site["originals"]["db1"]
    shutil.rmtree(data)  # the server lost its data
    dest = fresh(site, "roundtrip")
    # Listed first, as an operator would.
    rows = json.loads(restore_cli("restore", "list", "--target", target_arg(site), "--prefix", PREFIX + "/").stdout)
    assert [r["key"] for r in rows] == [site["manifest"]["archive"]["key"]]
    assert rows[0]["storage_class"] == "GLACIER" and rows[0]["lock_mode"] == "COMPLIANCE"
    assert rows[0]["retrieval"] == "not-requested" and set(rows[0]["servers"]) == {"web1", "db1"}
    ok, diffs = restore_server_and_compare(site["target"], site["offline_key"], "db1", data, dest,
                                           expected=expected, prefix=PREFIX + "/")  # fmt: skip
    assert ok, diffs[:5]
    restored = dest / str(data).lstrip("/")
    # What only survived as fake-super xattrs, and the ACL rsync packed.
    assert (restored / "dev" / "loop9").is_block_device() and os.stat(restored / "etc" / "secret").st_uid == 1234
    assert "user:1234:r--" in acl_text(restored / "etc" / "config.ini")
    assert not any(n.startswith("user.rsync.") for n in os.listxattr(restored / "etc" / "config.ini"))
    # Put back where it was: the server has its data again.
    subprocess.run(["cp", "-a", str(restored), str(data)], check=True)
    shutil.rmtree(dest.parent)


# -- failures: a clear error and nothing written -------------------------------------------


def _copy_archive(site, name, data: bytes, storage_class="STANDARD", **manifest_changes):
    """Another archive object and its manifest, put as admin (tests only)."""
    s3 = site["moto"].client("admin")
    manifest = json.loads(json.dumps(site["manifest"]))
    key = f"snap/copies/{name}.sqfs.gpg"  # outside the prefix the audit and drill read
    manifest["archive"]["key"] = key
    manifest["archive"]["version_id"] = None
    for field, value in manifest_changes.items():
        manifest["archive"][field] = value
    if data is not None:
        s3.put_object(Bucket=site["moto"].BUCKET, Key=key, Body=data, StorageClass=storage_class)
    s3.put_object(Bucket=site["moto"].BUCKET, Key=key + ".manifest.json", Body=json.dumps(manifest).encode())
    return key


@pytest.fixture(scope="module")
def ciphertext(site):
    s3 = site["moto"].client("admin")
    key = site["manifest"]["archive"]["key"]
    s3.restore_object(Bucket=site["moto"].BUCKET, Key=key, RestoreRequest={"Days": 1})
    return s3.get_object(Bucket=site["moto"].BUCKET, Key=key)["Body"].read()


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("case", ["tampered", "tampered-mdc", "wrong-key", "truncated", "missing", "glacier"])
def test_failures_are_clear_and_write_nothing(site, ciphertext, case, tmp_path):
    import hashlib

    key_file = site["offline_key"]
    extra = []
    if case == "tampered":
        archive = _copy_archive(site, "tampered", _flip(ciphertext, len(ciphertext) // 2))
        expect = ("IntegrityError", "the manifest says")
    elif case == "tampered-mdc":
        bent = _flip(ciphertext, len(ciphertext) - 30)  # inside the encrypted data
        archive = _copy_archive(site, "tampered-mdc", bent, sha256=hashlib.sha256(bent).hexdigest())
        expect = ("IntegrityError", "")
    elif case == "wrong-key":
        archive = site["manifest"]["archive"]["key"]
        with GnuPG(uid="someone else <x@snap.invalid>") as other:
            key_file = other.export_secret(tmp_path / "other.asc")
        expect = ("InvalidKey", "")
    elif case == "truncated":
        archive = _copy_archive(site, "truncated", ciphertext[: len(ciphertext) - 4096])
        expect = ("IntegrityError", "truncated")
    elif case == "missing":
        archive = _copy_archive(site, "missing", None)
        expect = ("NotFound", "missing.sqfs.gpg")
    else:
        archive = _copy_archive(site, "glacier", ciphertext, storage_class="GLACIER")
        extra = ["--no-request"]
        expect = ("NotReady", "no retrieval was requested")
    dest = fresh(site, f"fail-{case}")
    work = tmp_path / "work"
    proc = restore_cli("restore", "--target", target_arg(site), "--archive", archive, "--key", key_file,
                       "--server", "db1", "--to", dest, "--work-dir", work, "--quiet", *extra, check=False)  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    message = proc.stderr.strip().splitlines()[-1]
    assert expect[1] in message, message
    assert not dest.exists(), f"{case}: the destination was created"
    assert os.listdir(dest.parent) == [], f"{case}: left {os.listdir(dest.parent)}"
    leftovers = list(work.rglob("*")) if work.exists() else []
    assert not any(p.name == "image.sqfs" for p in leftovers), f"{case}: a decrypted image was left: {leftovers}"


# -- air-gapped, credentials for a fresh machine ----------------------------------------------


def test_air_gapped_from_file_whole_image_and_one_path(site, ciphertext, tmp_path):
    archive = tmp_path / "archive.sqfs.gpg"
    archive.write_bytes(ciphertext)
    (tmp_path / "archive.sqfs.gpg.manifest.json").write_text(json.dumps(site["manifest"]))
    data = str(site["fleet"].client_data("web1")).lstrip("/")
    snap = "recent.0"
    one = fresh(site, "airgap-one")
    rep = json.loads(restore_cli("restore", "--from-file", archive, "--key", site["offline_key"], "--to", one,
                                 "--select", f"{snap}/web1/{data}/etc/secret", "--quiet").stdout)  # fmt: skip
    # The image's digest proves what is restored; the file's is not computed (docs/RESTORE.md).
    assert rep["checks"]["mdc"] and rep["checks"]["plaintext_sha256"], rep["checks"]
    assert rep["checks"]["ciphertext_sha256"] is None, rep["checks"]
    secret = one / snap / "web1" / data / "etc" / "secret"
    st = os.stat(secret)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o600)
    assert secret.read_bytes() == b"s3cr3t\n"
    whole = fresh(site, "airgap-whole")
    restore_cli("restore", "--from-file", archive, "--key", site["offline_key"], "--to", whole, "--quiet")
    # Every snapshot level, and not rotation's scratch (.sync is renamed into recent.0).
    names = {p.name for p in whole.iterdir()}
    assert "recent.0" in names and ".sync" not in names, names
    want = site["originals"]["web1"]
    assert describe(whole / snap / "web1" / data) == want
    shutil.rmtree(one.parent)
    shutil.rmtree(whole.parent)
    # A padded file (a decompression bomb would be one) is refused by its size before it is decrypted.
    archive.write_bytes(ciphertext + b"\0" * (1 << 20))
    padded = fresh(site, "airgap-padded")
    proc = restore_cli("restore", "--from-file", archive, "--key", site["offline_key"], "--to", padded, "--quiet",
                       check=False)  # fmt: skip
    assert proc.returncode != 0 and "manifest says" in proc.stderr, proc.stderr
    assert not padded.exists()
    shutil.rmtree(padded.parent)


@pytest.mark.parametrize(
    "record",
    [
        # A digest of the image that was never its: restore hashes the file to tell which is wrong.
        ("a wrong image digest", {"plaintext": "0" * 64}, "the decrypted image is"),
        # The manifest of another archive of the same size: the file is not the one it names.
        ("another archive's", {"plaintext": "1" * 64, "archive": "2" * 64}, "the encrypted file is"),
        # Only the file's digest differs (another encryption of the same image would): the image
        # is the one the manifest names, byte for byte, and that is what is restored.
        ("only the file's digest wrong", {"archive": "3" * 64}, None),
    ],
    ids=lambda r: r[0],
)
def test_from_file_the_image_digest_decides(site, ciphertext, tmp_path, record):
    """Restore from a file proves the image it restores against the manifest's plaintext digest
    and size; the ciphertext is hashed only when they disagree, to name the cause. Nothing is
    written when they disagree."""
    name, changes, want = record
    archive = tmp_path / "archive.sqfs.gpg"
    archive.write_bytes(ciphertext)
    manifest = json.loads(json.dumps(site["manifest"]))
    if "plaintext" in changes:
        manifest["plaintext"]["sha256"] = changes["plaintext"]
    if "archive" in changes:
        manifest["archive"]["sha256"] = changes["archive"]
    (tmp_path / "archive.sqfs.gpg.manifest.json").write_text(json.dumps(manifest))
    dest = fresh(site, f"digest-{len(changes)}-{'plaintext' in changes}")
    proc = restore_cli("restore", "--from-file", archive, "--key", site["offline_key"], "--to", dest, "--quiet",
                       check=False)  # fmt: skip
    print(f"{name}: rc {proc.returncode} {proc.stderr.strip()[-300:]}")
    if want:
        assert proc.returncode != 0 and want in proc.stderr, proc.stderr
        assert not dest.exists() or not any(dest.iterdir())
    else:
        assert proc.returncode == 0, proc.stderr
        rep = json.loads(proc.stdout)
        assert rep["checks"]["plaintext_sha256"] and rep["checks"]["ciphertext_sha256"] is None, rep["checks"]
        data = str(site["fleet"].client_data("web1")).lstrip("/")
        assert describe(dest / "recent.0" / "web1" / data) == site["originals"]["web1"]
    shutil.rmtree(dest.parent)


def test_pack_creds_round_trip_in_memory_only(site, tmp_path):
    pack = tmp_path / "creds.age"
    phrase = tmp_path / "phrase"
    phrase.write_text("correct horse battery staple\n")
    target = {k: v for k, v in site["target"].items() if k not in ("profile", "credentials_file")}
    restore_cli("pack-creds", "--out", pack, "--credentials-file", site["target"]["credentials_file"],
                "--profile", "restore", "--target", json.dumps(target), "--prefix", PREFIX + "/",
                "--passphrase-file", phrase, "--work-factor", "12")  # fmt: skip
    text = pack.read_text()
    secret = pathlib.Path(site["target"]["credentials_file"]).read_text().split("aws_secret_access_key = ")[1].strip()
    assert text.startswith("-----BEGIN AGE ENCRYPTED FILE-----") and secret not in text
    assert pack.stat().st_mode & 0o777 == 0o600
    rows = json.loads(restore_cli("restore", "list", "--creds", pack, "--creds-passphrase-file", phrase,
                                  "--config", "/nonexistent").stdout)  # fmt: skip
    assert [r["key"] for r in rows if "sqfs.gpg" in r["key"]][0] == site["manifest"]["archive"]["key"]
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    proc = restore_cli("restore", "list", "--creds", pack, "--creds-passphrase-file", wrong, "--config", "/nonexistent",
                       check=False)  # fmt: skip
    assert proc.returncode == 2 and "wrong passphrase" in proc.stderr, proc.stderr
    assert restore_cli("pack-creds", "--out", pack, "--target", json.dumps(target), "--credentials-file",
                       site["target"]["credentials_file"], "--profile", "restore", "--passphrase-file", phrase,
                       check=False).returncode != 0  # never overwritten  # fmt: skip


# -- local history, back onto the server over Salt ------------------------------------------------


def test_local_history_one_file_on_the_backup_server(site, tmp_path):
    fleet = site["fleet"]
    data = str(fleet.client_data("db1"))
    dest = tmp_path / "one"
    rep = fleet.salt("snap.restore", "db1", f"{data}/etc/secret", f"to={dest}", tgt="backup1")
    assert rep["extract"]["files"] == 1, rep
    got = dest / data.lstrip("/") / "etc" / "secret"
    st = os.stat(got)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o600) and got.read_bytes() == b"s3cr3t\n"
    # Parents come back with the server's metadata too.
    assert oct(os.stat(got.parent).st_mode & 0o7777) == site["originals"]["db1"][b"etc"]["mode"]


def test_back_onto_the_server_through_salt(site):
    fleet = site["fleet"]
    data = fleet.client_data("db1")
    etc = data / "etc"
    want = {k: dict(v) for k, v in site["originals"]["db1"].items() if k == b"etc" or k.startswith(b"etc/")}
    shutil.rmtree(etc)
    ret = fleet.run("snap.restore", "db1", str(etc))
    assert ret["result"] is True and ret["onto"] == "db1", ret
    got = {k: v for k, v in describe(data).items() if k == b"etc" or k.startswith(b"etc/")}
    # hard3 is linked to data/hard1 on the server: restored on its own it is a new inode.
    for d in (want, got):
        d[b"etc/hard3"].pop("link")
    assert got == want
    # Nothing is replaced unless asked; the transfer areas are cleaned up.
    again = fleet.master.salt_run_cli(timeout=300).run("snap.restore", "db1", str(etc))
    assert again.returncode != 0 and "exists" in (again.stdout + again.stderr)
    for minion_id in ("backup1", "db1"):
        area = fleet.root_of(minion_id) / "var" / "lib" / "snap" / "restore"
        assert not area.exists() or list(area.iterdir()) == [], minion_id


# -- proof -----------------------------------------------------------------------------------------


def test_drill_and_audit_through_salt(site):
    fleet = site["fleet"]
    ret = fleet.run("snap.verify")
    rec = ret["record"]
    assert rec["result"] == "ok", ret
    assert (
        rec["drill"]["ok"]
        and rec["drill"]["files_checked"] > 0
        and rec["drill"]["archive_key"] == site["manifest"]["archive"]["key"]
    )
    assert rec["audit"]["ok"] and rec["audit"]["newest"] == site["manifest"]["archive"]["key"]
    kept = fleet.root_of("web1") / "var" / "lib" / "snap" / "verify-last.json"
    assert json.loads(kept.read_text())["run_id"] == rec["run_id"]
    # The backup server keeps a copy, and its metrics carry the drill result.
    on_backup = fleet.root_of("backup1") / "var" / "lib" / "snap" / "verify-last.json"
    assert json.loads(on_backup.read_text())["run_id"] == rec["run_id"]
    metrics = fleet.salt("snap.write_metrics", tgt="backup1")
    assert "\nsnap_drill_last_success 1\n" in pathlib.Path(metrics).read_text()
    # The drill key's secret part never reached the backup server.
    tail = site["drill_key"].read_bytes()[-64:]
    for path in (fleet.root_of("backup1")).rglob("*"):
        if path.is_file() and path.stat().st_size < 10_000_000:
            assert tail not in path.read_bytes(), path


def test_the_state_schedules_the_audit_on_the_drill_minion(site):
    fleet = site["fleet"]
    from tests.support import system

    ret = fleet.salt("state.apply", "snap.verify", tgt="web1")
    assert state_failures({"web1": ret}) == []
    config = fleet.root_of("web1") / "etc" / "snap" / "verify.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text())["prefix"] == PREFIX + "/"
    line = next(l for l in system.crontab_lines() if " -m snap_core verify " in l)
    assert line.startswith("30 6 * * * ") and str(config) in line
    # What cron runs: the audit alone, recorded.
    command = line.split(" ", 5)[5].replace(" --quiet", "").replace("snap_core verify", "snap_core --json verify")
    proc = subprocess.run(command, shell=True, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["audit"]["ok"] is True


def test_audit_flags_an_object_under_policy(site, tmp_path):
    s3 = site["moto"].client("admin")
    import datetime

    short = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10)
    key = f"{PREFIX}/short.sqfs.gpg"
    manifest = json.loads(json.dumps(site["manifest"]))
    manifest["archive"]["key"] = key
    manifest["archive"]["version_id"] = None  # not the real archive's: this object has its own
    for k, body in ((key, b"x"), (key + ".manifest.json", json.dumps(manifest).encode())):
        s3.put_object(Bucket=site["moto"].BUCKET, Key=k, Body=body, ObjectLockMode="GOVERNANCE",
                      ObjectLockRetainUntilDate=short)  # fmt: skip
    proc = restore_cli(
        "verify", "--target", target_arg(site), "--prefix", PREFIX + "/", "--state-dir", tmp_path, check=False
    )
    assert proc.returncode == 1, proc.stderr
    rec = json.loads((tmp_path / "verify-last.json").read_text())
    flagged = [r for r in rec["audit"]["archives"] if r["problems"]]
    assert {r["key"] for r in flagged} == {key, key + ".manifest.json"}, flagged
    for row in flagged:  # the archive and its manifest, each judged on its own lock
        assert any("GOVERNANCE" in p and "for at least 90 days" in p for p in row["problems"]), row
    ok_rows = [r for r in rec["audit"]["archives"] if r["key"].startswith(site["manifest"]["archive"]["key"])]
    assert ok_rows and all(not r["problems"] for r in ok_rows)


# -- a download cut off half way is resumed by the next run ---------------------------------------


def test_a_dropped_download_is_resumed_by_the_next_run(site, ciphertext, tmp_path):
    assert len(ciphertext) > 3 << 20, "the archive must be big enough to cut"
    dest, work = fresh(site, "resume"), tmp_path / "work"
    args = ("restore", "--archive", site["manifest"]["archive"]["key"], "--key", site["offline_key"],
            "--server", "db1", "--to", dest, "--work-dir", work, "--quiet")  # fmt: skip
    try:
        with Proxy(site["moto"].port, cut_response_after=2 << 20) as proxy:
            target = json.dumps(dict(site["target"], endpoint_url=proxy.endpoint, part_retries=0, sdk_max_attempts=1))
            first = restore_cli(*args, "--target", target, check=False)
            assert first.returncode != 0 and "the next run resumes it" in first.stderr, first.stderr
            assert proxy.cuts >= 1 and not dest.exists()
            part = next(work.rglob("archive.sqfs.gpg.part"))
            kept = part.stat().st_size
            assert 0 < kept < len(ciphertext)
            proxy.cut_response_after = None
            rep = json.loads(restore_cli(*args, "--target", target).stdout)
        assert rep["checks"]["download"]["resumed_from"] == kept
        assert rep["checks"]["download"]["fetched"] == len(ciphertext) - kept
        assert rep["checks"]["ciphertext_sha256"] and rep["checks"]["plaintext_sha256"]
        data = str(site["fleet"].client_data("db1")).lstrip("/")
        assert describe(dest / data) == site["originals"]["db1"]
        assert list(work.iterdir()) == [], "the work directory was not cleaned up"
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)


# -- a compromised backup server, through Salt -------------------------------------------------


def test_a_hostile_backup_server_cannot_place_files_through_salt(site, tmp_path, capsys):
    """What db1's minion runs (snap.restore_receive + snap.restore_apply, the
    steps of salt-run snap.restore), fed picks a compromised backup server
    forged and sealed to db1's real key. The asked server and path come from
    the master; db1 refuses every forgery and writes nothing outside the
    asked path (rust/snap-restore/tests/hostile.rs tries many more)."""
    import base64

    import snap_core

    fleet = site["fleet"]
    pub = fleet.salt("snap.pubkey", tgt="db1")
    line = pub["line"] if isinstance(pub, dict) else pub
    dest = tmp_path / "db1-root"
    (dest / "etc" / "cron.d").mkdir(parents=True)
    before = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    forged = {
        "cron.d described as /etc/nginx": ({"cron.d/x": b"* * * * * root evil\n"}, "etc/nginx", "cron.d", ["etc"], False),
        "a whole-server image for /etc/nginx": ({"db1/etc/cron.d/x": b"* * * * * root evil\n"}, "", "db1", [], True),
        "parents root/.ssh": ({"authorized_keys": b"ssh-ed25519 AAAA attacker\n"}, "etc/nginx", "authorized_keys",
                              ["root", ".ssh"], False),
    }  # fmt: skip
    refused = []
    for i, (name, (files, path, root_name, parents, whole)) in enumerate(forged.items()):
        src = tmp_path / f"forge-{i}"
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        image, sealed = tmp_path / f"pick-{i}.sqfs", tmp_path / f"pick-{i}.sqfs.age"
        snap_core.pack(os.fsencode(src), os.fsencode(image), compressor="lz4")
        info = snap_core.seal_for_server(image, sealed, line)
        packed = {"pick": {"snapshot": "recent.0", "server": "db1", "path": path}, "root_name": root_name,
                  "whole_server": whole, "image_size": 0, "files": 1, "bytes": 1,
                  "parents": [{"name": p, "mode": 0o777, "uid": 0, "gid": 0, "mtime": 0} for p in parents]}  # fmt: skip
        transfer = f"forged{i}00000000"
        fleet.salt("snap.restore_receive", transfer, 0, base64.b64encode(sealed.read_bytes()).decode(), tgt="db1")
        ret = fleet.master.salt_cli(timeout=120).run(
            "snap.restore_apply", transfer, json.dumps(packed), info["sha256"], "server=db1", "path=/etc/nginx",
            f"to={dest}", "overwrite=True", minion_tgt="db1",
        )  # fmt: skip
        assert ret.returncode != 0, f"{name}: restored"
        assert "refusing the restore of /etc/nginx of db1" in (ret.stdout + ret.stderr), ret.stdout
        refused.append(name)
    after = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert after == before, after
    area = fleet.root_of("db1") / "var" / "lib" / "snap" / "restore"
    assert not area.exists() or list(area.iterdir()) == []
    with capsys.disabled():
        print(f"\nthrough Salt: {len(refused)} forged picks tried, 0 files written outside the asked path")
