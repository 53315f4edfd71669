"""The Rust core through its Python binding: schedule, account names, SSH keys."""

import os
import random
import stat
import string
import zlib

import pytest

import snap_core
from snap_core import errors
from tests.support.helpers import need, run


def random_ids(n, seed=1):
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "._-é€\u0000 "
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.mark.parametrize("slots", [1, 7, 59, 60, 1000])
def test_backup_minute_equals_zlib_crc32(slots):
    for key in random_ids(2000) + ["web1", "", "db1.example.com"]:
        assert snap_core.backup_minute(key, slots) == zlib.crc32(key.encode()) % slots


def test_backup_minute_default_slots_and_bad_slots():
    assert snap_core.backup_minute("web1") == zlib.crc32(b"web1") % 60
    with pytest.raises(snap_core.InvalidInput, match="at least 1"):
        snap_core.backup_minute("web1", 0)
    with pytest.raises(OverflowError):
        snap_core.backup_minute("web1", -1)


def test_exceptions_subclass_the_builtins_callers_catch():
    assert issubclass(snap_core.InvalidKey, ValueError)
    assert issubclass(snap_core.SecretKeyMaterial, snap_core.InvalidKey)
    assert issubclass(snap_core.AccountCollision, ValueError)
    assert issubclass(snap_core.DiskFull, OSError)
    assert issubclass(snap_core.NetworkError, ConnectionError)
    assert snap_core.InvalidKey is errors.InvalidKey


def test_account_names_are_readable_valid_and_distinct():
    assert snap_core.account_name("web1.example.com") == "snap-web1"
    assert snap_core.account_name("DB1") == "snap-db1"
    names = {}
    for i in range(3000):
        minion_id = f"host-{i}-" + "x" * (i % 50) + ".example.com"
        name = snap_core.account_name(minion_id)
        assert len(name) <= 32 and name.startswith("snap-")
        assert all(c in string.ascii_lowercase + string.digits + "-_" for c in name)
        assert names.setdefault(name, minion_id) == minion_id, f"{minion_id} and {names[name]} share {name}"


@pytest.mark.parametrize("bad", ["", "web 1", "../etc", "web1/x", "wéb1", ".x", "x..y", "-x", "a\nb", "x" * 254])
def test_unmappable_ids_raise_value_error_naming_the_id(bad):
    with pytest.raises(ValueError) as info:
        snap_core.account_name(bad)
    assert repr(bad)[1:-1][:20] in str(info.value) or bad == ""


def test_shared_short_names_get_distinct_names_and_merges_are_refused():
    names = snap_core.account_names(["web1.dc1.example.com", "web1.dc2.example.com", "db1"])
    assert names == {
        "web1.dc1.example.com": "snap-web1-dc1",
        "web1.dc2.example.com": "snap-web1-dc2",
        "db1": "snap-db1",
    }
    # Two overrides naming one account: refused for both, naming both.
    with pytest.raises(snap_core.AccountCollision) as info:
        snap_core.account_names(["a.x", "b.x"], {"a.x": "snap-same", "b.x": "snap-same"})
    assert "a.x" in str(info.value) and "b.x" in str(info.value)
    names, rejected = snap_core.assign_accounts(["web1.a", "web1.b", "db1"], {}, {"snap-web1": "web1.old"})
    assert names == {"web1.a": "snap-web1-a", "web1.b": "snap-web1-b", "db1": "snap-db1"}
    assert rejected == {}
    snap_core.validate_account_name("snap-web1-dc1")
    with pytest.raises(ValueError, match="Root!"):
        snap_core.validate_account_name("Root!")


@pytest.fixture
def keydir(tmp_path):
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    return d


def test_generate_keypair_matches_ssh_keygen(keydir):
    need("ssh-keygen")
    path = keydir / "id_ed25519"
    fingerprint = snap_core.generate_keypair(str(path), "snap@web1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{path}.pub").st_mode) == 0o644
    printed = run("ssh-keygen", "-lf", f"{path}.pub").stdout.split()
    assert printed[:2] == ["256", fingerprint] and printed[-1] == "(ED25519)"
    parsed = snap_core.parse_public_key(open(f"{path}.pub").read())
    assert parsed["fingerprint"] == fingerprint and parsed["type"] == "ssh-ed25519"
    derived = run("ssh-keygen", "-yf", str(path)).stdout.split()
    assert derived[1] == parsed["key"]
    with pytest.raises(snap_core.AlreadyExists):
        snap_core.generate_keypair(str(path))
    with pytest.raises(FileExistsError):
        snap_core.generate_keypair(path)


def test_generate_keypair_reports_missing_directory(tmp_path):
    with pytest.raises(snap_core.NotFound, match="nope"):
        snap_core.generate_keypair(str(tmp_path / "nope" / "id"))


def ssh_keygen(tmp_path, *args, name="k"):
    path = tmp_path / name
    run("ssh-keygen", "-q", "-N", "", "-C", "c", "-f", str(path), *args)
    return path


@pytest.mark.parametrize(
    "args,ok",
    [
        (("-t", "ed25519"), True),
        (("-t", "ecdsa", "-b", "256"), True),
        (("-t", "ecdsa", "-b", "521"), True),
        (("-t", "rsa", "-b", "3072"), True),
        (("-t", "rsa", "-b", "2048"), False),
    ],
)
def test_parse_public_key_agrees_with_ssh_keygen(tmp_path, args, ok):
    need("ssh-keygen")
    path = ssh_keygen(tmp_path, *args)
    text = open(f"{path}.pub").read()
    if not ok:
        with pytest.raises(snap_core.InvalidKey, match="bits"):
            snap_core.parse_public_key(text)
        return
    parsed = snap_core.parse_public_key(text)
    assert run("ssh-keygen", "-lf", f"{path}.pub").stdout.split()[1] == parsed["fingerprint"]
    assert parsed["comment"] == "c"


def test_parse_public_key_refuses_everything_but_one_bare_key(tmp_path):
    need("ssh-keygen")
    good = open(f"{ssh_keygen(tmp_path, '-t', 'ed25519')}.pub").read().strip()
    other = open(f"{ssh_keygen(tmp_path, '-t', 'ed25519', name='o')}.pub").read().strip()
    private = open(ssh_keygen(tmp_path, "-t", "ed25519", name="p")).read()
    kind, blob, _ = good.split(" ", 2)
    cases = {
        "forced command": f'command="/bin/sh -c id" {good}',
        "restrict option": f"restrict,port-forwarding {good}",
        "from option": f'from="10.0.0.1" {good}',
        "two keys": f"{good}\n{other}",
        "two keys one line": f"{good} {other}",
        "embedded newline": f"{kind} {blob[:20]}\n{blob[20:]}",
        "embedded NUL": f"{kind} {blob}\0",
        "truncated base64": f"{kind} {blob[:-6]}",
        "unknown type": f"ssh-foo {blob}",
        "dsa": f"ssh-dss {blob}",
        "certificate": f"ssh-ed25519-cert-v01@openssh.com {blob}",
        "empty": "",
        "garbage": "hello world",
    }
    for what, text in cases.items():
        with pytest.raises(snap_core.InvalidKey):
            snap_core.parse_public_key(text)
            pytest.fail(f"accepted: {what}")
    with pytest.raises(snap_core.SecretKeyMaterial):
        snap_core.parse_public_key(private)
