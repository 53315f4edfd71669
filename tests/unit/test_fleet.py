"""Re-validation of mine data: what a compromised minion can publish is refused."""

import pytest

import snap_core
from snap_core import fleet


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("web1", "db1", "web1b"):
        snap_core.generate_keypair(str(d / name), f"snap@{name}")
        out[name] = d / name
    return out


def entry(minion_id, key_path):
    return fleet.mine_entry(minion_id, key_path)


def test_mine_entry_is_canonical(keys):
    e = entry("web1.example.com", keys["web1"])
    assert e["id"] == "web1.example.com" and e["account"] == "snap-web1"
    assert e["line"].startswith("ssh-ed25519 ") and len(e["line"].split()) == 2


def test_valid_fleet_is_accepted(keys):
    mine = {"web1.example.com": entry("web1.example.com", keys["web1"]), "db1": entry("db1", keys["db1"])}
    result = fleet.validate_mine(mine)
    assert result["rejected"] == {}
    assert result["accepted"]["db1"]["account"] == "snap-db1"
    assert result["accepted"]["web1.example.com"]["line"] == mine["web1.example.com"]["line"]


def test_injection_attempts_are_rejected_and_the_rest_kept(keys):
    good = entry("db1", keys["db1"])
    line = entry("web1", keys["web1"])["line"]
    other = entry("web1b", keys["web1b"])["line"]

    def forged(minion_id, **changes):
        e = dict(entry(minion_id, keys["web1"]))
        e.update(changes)
        return e

    mine = {
        "db1": good,
        "opts": forged("opts", line='command="/bin/sh" ' + line),
        "restrict": forged("restrict", line="no-pty,permitopen=\"*:*\" " + line),
        "twolines": forged("twolines", line=line + "\n" + other),
        "nul": forged("nul", line=line + "\0"),
        "liar": forged("liar", id="db1"),
        "fpmismatch": forged("fpmismatch", fingerprint="SHA256:AAAA"),
        "notamap": "ssh-ed25519 AAAA",
        "noline": {"id": "noline"},
        "bad id": forged("x"),
    }
    result = fleet.validate_mine(mine)
    assert list(result["accepted"]) == ["db1"]
    assert set(result["rejected"]) == set(mine) - {"db1"}
    assert "options are not allowed" in result["rejected"]["opts"]
    assert "more than one line" in result["rejected"]["twolines"]
    assert "claims to be from" in result["rejected"]["liar"]
    assert "does not match" in result["rejected"]["fpmismatch"]
    assert "cannot be used by snap" in result["rejected"]["bad id"]


def test_shared_short_names_get_their_own_accounts_and_overrides_win(keys):
    mine = {
        "web1.example.com": entry("web1.example.com", keys["web1"]),
        "web1.example.org": entry("web1.example.org", keys["web1b"]),
        "db1": entry("db1", keys["db1"]),
    }
    result = fleet.validate_mine(mine)
    assert result["rejected"] == {}
    assert result["accepted"]["web1.example.com"]["account"] == "snap-web1-example-com"
    assert result["accepted"]["web1.example.org"]["account"] == "snap-web1-example-org"
    fixed = fleet.validate_mine(mine, {"web1.example.org": "snap-web1-org"})
    assert fixed["rejected"] == {}
    assert fixed["accepted"]["web1.example.org"]["account"] == "snap-web1-org"
    assert fixed["accepted"]["web1.example.com"]["account"] == "snap-web1"


def test_a_bad_key_keeps_its_servers_name_from_everyone_else(keys):
    mine = {
        "web1.dc1": entry("web1.dc1", keys["web1"]),
        "web1.dc2": dict(entry("web1.dc2", keys["web1b"]), line="ssh-ed25519 AAAA"),
    }
    result = fleet.validate_mine(mine)
    assert list(result["accepted"]) == ["web1.dc1"]
    assert result["accepted"]["web1.dc1"]["account"] == "snap-web1-dc1"
    assert result["names"] == {"web1.dc1": "snap-web1-dc1", "web1.dc2": "snap-web1-dc2"}


def test_an_override_taking_another_servers_account_is_refused(keys):
    mine = {"web1": entry("web1", keys["web1"]), "web2": entry("web2", keys["web1b"])}
    result = fleet.validate_mine(mine, {"web2": "snap-web1"}, {"snap-web1": "web1"})
    assert list(result["accepted"]) == ["web1"]
    assert "belongs to \"web1\"" in result["rejected"]["web2"]


def test_read_public_key_names_the_file(tmp_path):
    with pytest.raises(snap_core.NotFound, match="snap.keypair"):
        fleet.read_public_key(tmp_path / "missing")
    (tmp_path / "bad.pub").write_bytes(b"\xff\xfe not utf8")
    with pytest.raises(snap_core.InvalidKey, match="bad.pub"):
        fleet.read_public_key(tmp_path / "bad")
    (tmp_path / "big.pub").write_text("ssh-ed25519 " + "A" * 9000)
    with pytest.raises(snap_core.InvalidKey, match="big.pub"):
        fleet.read_public_key(tmp_path / "big")
