"""snap-backup's command line: results, errors and exit codes."""

import json

import pytest

from snap_core import cli


def test_minute_prints_json(capsys):
    assert cli.main(["--json", "minute", "web1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "web1", "minute": 17}


def test_bad_input_exits_2_with_a_message(capsys, tmp_path):
    bad = tmp_path / "k.pub"
    bad.write_text('command="x" ssh-ed25519 AAAA')
    assert cli.main(["check-key", str(bad)]) == 2
    assert "options are not allowed" in capsys.readouterr().err


def test_keygen_refuses_to_overwrite(capsys, tmp_path):
    key = tmp_path / "id"
    assert cli.main(["keygen", str(key)]) == 0
    assert "SHA256:" in capsys.readouterr().out
    assert cli.main(["keygen", str(key)]) == 1
    assert "never overwrites" in capsys.readouterr().err


def test_unknown_command_is_usage_error():
    with pytest.raises(SystemExit) as info:
        cli.main(["snapshot-everything"])
    assert info.value.code == 2
