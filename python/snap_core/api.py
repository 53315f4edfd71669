"""The contract between snap's Salt loader modules and this core.

The core exports ``API_VERSION = (major, minor)``. Each loader module states the
version it was written against and asks :func:`incompatible` in its
``__virtual__``: the same major and at least that minor means everything it
calls is here. Adding to what the modules may call bumps the minor; changing or
removing something bumps the major (``rust/snap-py/src/lib.rs``).

The wheel's own modules always match its core. The check is for copies synced
from the file roots (``_modules/`` etc. under ``file_roots`` or gitfs), which
Salt prefers over the wheel's: the newer of the two must not call a core that
lacks what it needs, and an old copy must not call a core that changed under it.
"""

from __future__ import annotations

import os

from snap_core._rust import API_VERSION, __version__

__all__ = ["API_VERSION", "incompatible"]

_WHEEL_MODULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saltext")


def _shipped_here(module_file: str | None) -> bool:
    return bool(module_file) and os.path.abspath(module_file).startswith(_WHEEL_MODULES + os.sep)


def incompatible(needs: tuple[int, int], module_file: str | None = None, what: str = "snap module") -> str | None:
    """``None`` when this core serves a module written against API ``needs``;
    otherwise the reason, naming what to upgrade or remove."""
    major, minor = needs
    have = tuple(API_VERSION)
    if have[0] == major and have[1] >= minor:
        return None
    where = f" ({module_file})" if module_file else ""
    core = f"snap_core {__version__} (core API {have[0]}.{have[1]})"
    if _shipped_here(module_file):
        return (
            f"{what}{where} needs core API {major}.{minor} but was installed with {core}: "
            "the snap wheel is damaged, reinstall it (state snap.core or salt-pip install --force-reinstall)"
        )
    if (have[0], have[1]) < (major, minor):
        return (
            f"{what}{where} needs snap core API {major}.{minor} or newer, this Python has {core}: "
            "upgrade the snap wheel (state snap.core with the new wheel, or salt-pip install -U "
            "snap_backup-<version>.whl), or remove this newer copy from the file roots and run "
            "saltutil.sync_all so that the modules shipped in the wheel load"
        )
    return (
        f"{what}{where} was written for snap core API {major}.x, this Python has {core}: "
        "this copy is older than the core; remove _modules/, _states/, _runners/, _pillar/ and "
        "_beacons/ from the file roots and run saltutil.sync_all so that the modules shipped in "
        "the wheel load, or replace them with the copies from the same release as the wheel"
    )
