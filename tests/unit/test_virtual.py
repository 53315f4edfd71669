"""Without the core, every snap loader module reports itself unavailable, with the reason."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = r"""
import importlib.util, json, sys
sys.modules["snap_core"] = None          # importing it now raises ImportError
spec = importlib.util.spec_from_file_location("probe", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
mod.__salt__ = {}                          # as the loader would provide, with no snap module in it
spec.loader.exec_module(mod)
print(json.dumps(mod.__virtual__()))
"""


@pytest.mark.parametrize("kind", ["modules", "states", "pillar", "runners", "beacons"])
def test_virtual_is_false_with_a_reason_without_the_core(kind):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / f"_{kind}" / "snap.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    available, reason = __import__("json").loads(out)
    assert available is False
    assert "snap" in reason and ("snap.core" in reason or "wheel" in reason)
