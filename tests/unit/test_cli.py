"""snap-backup's command line: results, errors and exit codes."""

import json
import subprocess
import sys

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


def test_starting_the_command_line_loads_no_provisioning_code():
    """Every snap-backup command (a restore included) starts by building the
    parser; the policy checker, boto3 glue and templates are loaded only by the
    two commands that use them (about 45 ms of each start before)."""
    code = "import sys, snap_core.cli; print(sorted(m for m in sys.modules if m.startswith('snap_core.provision')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == ["snap_core.provision", "snap_core.provision.cli"]
    # And the package still hands out every name, loading its module then.
    from snap_core import provision  # noqa: PLC0415

    assert provision.check_policies.__module__ == "snap_core.provision.checker"
    assert set(provision.__all__) <= set(dir(provision))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        provision.nothing_here  # noqa: B018
