"""snap.keypair state and the snap execution module, through Salt's loaders."""

import os
import stat

import pytest

import snap_core


@pytest.fixture
def key_path(root_dir):
    path = os.path.join(root_dir, "etc", "snap", "id_ed25519")
    yield path
    for p in (path, path + ".pub"):
        if os.path.lexists(p):
            os.unlink(p)


@pytest.fixture
def keypair(loaders):
    return loaders.states.snap.keypair


def test_module_is_loaded_with_core(loaders):
    assert loaders.modules.snap.version() == snap_core.__version__


def test_default_key_path_is_under_root_dir(loaders, root_dir, key_path):
    assert loaders.modules.snap.key_status()["path"] == key_path


def test_keypair_test_mode_changes_nothing(keypair, key_path):
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    ret = keypair(name=key_path, test=True)
    assert ret.result is None
    assert ret.changes == {"generated": {"old": None, "new": key_path}}
    assert not os.path.exists(key_path)


def test_keypair_creates_once_then_changes_nothing(keypair, loaders, key_path, minion_id):
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    first = keypair(name=key_path)
    assert first.result is True, first.comment
    fingerprint = first.changes["fingerprint"]["new"]
    assert fingerprint.startswith("SHA256:")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    before = open(key_path, "rb").read()

    second = keypair(name=key_path)
    assert second.result is True and second.changes == {}
    assert fingerprint in second.comment
    again_test = keypair(name=key_path, test=True)
    assert again_test.result is True and again_test.changes == {}
    assert open(key_path, "rb").read() == before

    entry = loaders.modules.snap.pubkey()
    assert entry["id"] == minion_id and entry["account"] == "snap-web1"
    assert entry["fingerprint"] == fingerprint
    assert entry["line"].startswith("ssh-ed25519 ") and entry["line"].count(" ") == 1


def test_keypair_repairs_mode_and_lost_public_half(keypair, key_path):
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    fingerprint = keypair(name=key_path).changes["fingerprint"]["new"]
    os.chmod(key_path, 0o644)
    os.unlink(key_path + ".pub")

    predicted = keypair(name=key_path, test=True)
    assert predicted.result is None
    assert set(predicted.changes) == {"mode", "public"}
    assert not os.path.exists(key_path + ".pub")

    fixed = keypair(name=key_path)
    assert fixed.result is True
    assert fixed.changes == {"mode": {"old": "0644", "new": "0600"}, "public": {"old": None, "new": key_path + ".pub"}}
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert snap_core.parse_public_key(open(key_path + ".pub").read())["fingerprint"] == fingerprint
    assert keypair(name=key_path).changes == {}


def test_keypair_refuses_to_guess(keypair, key_path, tmp_path):
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    # A public key without its private key is never overwritten.
    other = tmp_path / "other"
    snap_core.generate_keypair(str(other))
    stale = open(f"{other}.pub").read()
    with open(key_path + ".pub", "w") as handle:
        handle.write(stale)
    ret = keypair(name=key_path)
    assert ret.result is False and "without its private key" in ret.comment
    assert ret.changes == {}
    assert open(key_path + ".pub").read() == stale
    # A mismatched pair is an error too.
    os.unlink(key_path + ".pub")
    keypair(name=key_path)
    with open(key_path + ".pub", "w") as handle:
        handle.write(stale)
    ret = keypair(name=key_path)
    assert ret.result is False and "does not match" in ret.comment
    assert open(key_path + ".pub").read() == stale


def test_pubkey_without_key_is_a_clear_error(loaders, key_path):
    from salt.exceptions import CommandExecutionError

    with pytest.raises(CommandExecutionError, match="snap.keypair"):
        loaders.modules.snap.pubkey()
