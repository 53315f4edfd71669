"""State snap.core installs the wheel served from the salt tree into a throwaway virtualenv."""

import subprocess
import sys

import pytest


@pytest.fixture
def venv(tmp_path):
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


def test_snap_core_installs_into_the_given_python_once(loaders, venv, tmp_path):
    probe = [str(venv / "bin" / "python"), "-c", "import snap_core; print(snap_core.backup_minute('web1'))"]
    assert subprocess.run(probe, capture_output=True).returncode != 0, "core already importable"
    pillar = {"snap": {"core": {"bin_env": str(venv), "wheel_dir": str(tmp_path / "wheels")}}}

    predicted = loaders.modules.state.sls("snap.core", pillar=pillar, test=True)
    assert all(r.result is not False for r in predicted), [r.comment for r in predicted]
    assert subprocess.run(probe, capture_output=True).returncode != 0, "test=True installed something"

    first = loaders.modules.state.sls("snap.core", pillar=pillar)
    assert all(r.result is True for r in first), [r.comment for r in first]
    assert any(r.changes for r in first)
    assert subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip() == "17"
    cli = venv / "bin" / "snap-backup"
    assert cli.exists(), "the wheel installs the snap-backup command"

    second = loaders.modules.state.sls("snap.core", pillar=pillar)
    assert all(r.result is True and not r.changes for r in second), [(r.name, r.changes) for r in second]
