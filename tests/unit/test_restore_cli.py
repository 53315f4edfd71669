"""restore / pack-creds / verify argument handling, and the core's sealed
credentials, without any server."""

import json

import pytest

import snap_core
from snap_core import errors
from snap_core.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_restore_needs_a_destination_and_one_way_to_select(capsys, tmp_path):
    code, _, err = run(capsys, "restore", "--from-file", str(tmp_path / "a"), "--key", str(tmp_path / "k"))
    assert code == 2 and "--to DIR" in err
    (tmp_path / "k").write_bytes(b"x")
    code, _, err = run(capsys, "restore", "--from-file", str(tmp_path / "a"), "--key", str(tmp_path / "k"),
                       "--to", str(tmp_path / "d"), "--select", "recent.0/db1", "--server", "db1")  # fmt: skip
    assert code == 2 and "either --select or --server" in err
    assert not (tmp_path / "d").exists()


def test_restore_from_off_site_needs_a_target(capsys, tmp_path):
    code, _, err = run(capsys, "restore", "list", "--config", str(tmp_path / "none.json"))
    assert code == 2 and "no off-site target" in err


def test_sealed_credentials_round_trip_without_the_secret(tmp_path):
    target = {"bucket": "b", "region": "us-east-1", "endpoint_url": "http://127.0.0.1:9"}
    sealed = snap_core.seal_creds("AKIAX", "very-secret", target, b"pass phrase", prefix="snap/b1/", work_factor=10)
    assert b"very-secret" not in sealed and sealed.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    seen = snap_core.inspect_creds(sealed, "pass phrase")
    assert seen["access_key_id"] == "AKIAX" and seen["prefix"] == "snap/b1/" and "secret_access_key" not in json.dumps(seen)
    with pytest.raises(errors.InvalidKey, match="wrong passphrase"):
        snap_core.inspect_creds(sealed, "nope")
    with pytest.raises(errors.InvalidInput, match="profile"):
        snap_core.seal_creds("a", "b", {"bucket": "b", "profile": "admin"}, b"p", work_factor=10)
    # A store opens from the pack alone (no request is made until used).
    store = snap_core.ArchiveStore(None, creds=sealed, passphrase=b"pass phrase")
    assert store.prefix == "snap/b1/" and "s3://b" in store.describe()


def test_pack_creds_never_overwrites(capsys, tmp_path):
    out = tmp_path / "creds.age"
    out.write_text("keep")
    code, _, err = run(capsys, "pack-creds", "--out", str(out), "--target", '{"bucket": "b"}')
    assert code == 1 and "not overwriting" in err and out.read_text() == "keep"
