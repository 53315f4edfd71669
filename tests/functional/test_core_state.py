"""State snap.core installs the snap wheel into a throwaway virtualenv (pillar
snap:core:bin_env) from each place a fleet gets packages: the master's file
server (here the local file roots: salt://snap/files/dist/, checked against its
SHA256SUMS), a web server (a wheel URL with its hash; plain HTTP on 127.0.0.1
stands in for HTTPS, same code path), and a package index (a PEP 503 page on
127.0.0.1). Each honours test=True and changes nothing the second time."""

import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.support.wheel import WebServer, release

PROBE = "import snap_core, snap_core.saltext; print(snap_core.backup_minute('web1'))"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """One virtualenv (pip, no snap) for the module; each test uninstalls what it installed."""
    path = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


def installed(venv):
    return subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], capture_output=True, text=True)


@pytest.fixture
def clean_venv(venv):
    assert installed(venv).returncode != 0, "snap_core already importable"
    yield venv
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "snap-backup"], check=True)


def apply(loaders, pillar, test=False):
    return loaders.modules.state.sls("snap.core", pillar={"snap": {"core": pillar}}, test=test)


def assert_installs_once(loaders, venv, pillar):
    predicted = apply(loaders, pillar, test=True)
    assert all(r.result is not False for r in predicted), [r.comment for r in predicted]
    assert any(r.changes or r.result is None for r in predicted)
    assert installed(venv).returncode != 0, "test=True installed something"

    first = apply(loaders, pillar)
    assert all(r.result is True for r in first), [(r.name, r.comment) for r in first]
    assert any(r.changes for r in first)
    probe = installed(venv)
    assert probe.returncode == 0 and probe.stdout.strip() == "17", probe.stderr

    second = apply(loaders, pillar)
    assert all(r.result is True and not r.changes for r in second), [(r.name, r.changes) for r in second]


def test_from_the_masters_file_server_checked_against_sha256sums(loaders, clean_venv, tmp_path, root_dir):
    wheel, _ = release()
    served = REPO / "salt" / "snap" / "files" / "dist"
    assert (served / wheel.name).exists() and (served / "SHA256SUMS").exists(), "make install serves the release"
    pillar = {"bin_env": str(clean_venv), "wheel_dir": str(tmp_path / "wheels")}
    assert_installs_once(loaders, clean_venv, pillar)
    assert (clean_venv / "bin" / "snap-backup").exists(), "the wheel installs the snap-backup command"
    cached = pathlib.Path(root_dir) / str(tmp_path / "wheels").lstrip("/")  # wheel_dir is under root_dir
    assert [p.name for p in cached.iterdir()] == [wheel.name]


def test_from_a_web_server_with_its_hash_and_never_with_a_wrong_one(loaders, clean_venv, tmp_path):
    wheel, sums = release()
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(wheel, site)
    shutil.copy(sums, site)
    with WebServer(site) as web:
        base = {"bin_env": str(clean_venv), "wheel_dir": str(tmp_path / "wheels"), "source": f"{web.url}/{wheel.name}"}

        refused = apply(loaders, base)  # no hash: refused before anything is fetched
        assert any(r.result is False and "source_hash" in r.comment for r in refused), [r.comment for r in refused]
        wrong = apply(loaders, {**base, "source_hash": "0" * 64})
        assert any(r.result is False for r in wrong)
        assert installed(clean_venv).returncode != 0, "a wheel with the wrong hash was installed"

        assert_installs_once(loaders, clean_venv, {**base, "source_hash": f"{web.url}/SHA256SUMS"})
        assert f"/{wheel.name}" in web.paths


def test_from_a_package_index_as_a_pinned_wheel(loaders, clean_venv, tmp_path):
    wheel, _ = release()
    version = wheel.name.split("-")[1]
    project = tmp_path / "index" / "snap-backup"
    project.mkdir(parents=True)
    shutil.copy(wheel, project)
    with WebServer(tmp_path / "index") as web:
        pillar = {"bin_env": str(clean_venv), "source": "index", "version": version, "index_url": f"{web.url}/"}
        assert_installs_once(loaders, clean_venv, pillar)
        assert "/snap-backup/" in web.paths


def test_a_source_snap_cannot_use_is_a_clear_error(loaders, tmp_path):
    ret = apply(loaders, {"source": "ftp://example.invalid/snap.whl", "wheel_dir": str(tmp_path)})
    assert any(r.result is False and "snap:core:source must be" in r.comment for r in ret)
    ret = apply(loaders, {"source": "salt://snap/files/dist/", "version": "0.0.0-none", "wheel_dir": str(tmp_path)})
    assert any(r.result is False and "No snap wheel" in r.comment for r in ret)
