"""Loader modules check the core's API version (snap_core.api) and say what to
upgrade: a module newer than the core, or one older than a core whose API
changed, refuses to load and names the fix; the wheel's own modules load."""

import json
import subprocess
import sys

import pytest

import snap_core
from snap_core import api
from tests.conftest import REPO

MAJOR, MINOR = snap_core.API_VERSION


def test_the_core_exports_its_api_version():
    assert isinstance(MAJOR, int) and isinstance(MINOR, int) and MAJOR >= 1


@pytest.mark.parametrize("needs", [(MAJOR, 0), (MAJOR, MINOR)])
def test_a_module_written_for_this_api_or_an_older_minor_loads(needs):
    assert api.incompatible(needs, "/var/cache/salt/minion/extmods/modules/snap.py") is None


def test_a_module_newer_than_the_core_says_upgrade_the_wheel():
    why = api.incompatible(
        (MAJOR, MINOR + 1), "/var/cache/salt/minion/extmods/modules/snap.py", "snap execution module"
    )
    assert f"needs snap core API {MAJOR}.{MINOR + 1} or newer" in why
    assert "upgrade the snap wheel" in why and "extmods/modules/snap.py" in why


def test_a_module_older_than_the_cores_api_says_remove_the_synced_copy():
    why = api.incompatible((MAJOR - 1, 9), "/var/cache/salt/minion/extmods/modules/snap.py")
    assert "older than the core" in why and "saltutil.sync_all" in why


# A loader module from the file roots, run the way Salt's loader runs it, with
# the real core: a copy of _modules/snap.py that claims a newer API.
PROBE = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("probe", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
mod.__salt__ = {"snap.pubkey": None, "snap.settings": None}
spec.loader.exec_module(mod)
print(json.dumps(mod.__virtual__()))
"""


@pytest.mark.parametrize("kind", ["modules", "states", "runners", "pillar", "beacons"])
def test_a_synced_module_newer_than_the_core_does_not_load(kind, tmp_path):
    source = (REPO / f"_{kind}" / "snap.py").read_text()
    assert f"NEEDS_CORE_API = ({MAJOR}, {MINOR})" in source, "modules and core disagree on the API version"
    synced = tmp_path / "extmods" / kind / "snap.py"
    synced.parent.mkdir(parents=True)
    synced.write_text(
        source.replace(f"NEEDS_CORE_API = ({MAJOR}, {MINOR})", f"NEEDS_CORE_API = ({MAJOR}, {MINOR + 1})")
    )
    for path, loads in ((REPO / f"_{kind}" / "snap.py", True), (synced, False)):
        out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
        ret = json.loads(out.stdout)
        if loads:
            assert ret == "snap", ret
        else:
            assert ret[0] is False and "upgrade the snap wheel" in ret[1] and str(synced) in ret[1], ret
