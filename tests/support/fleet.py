"""A throwaway snap fleet on loopback: a real salt-master and minions.

Used by the integration tests (through pytest-salt-factories' manager) and by
``make demo`` (which builds the same manager itself). Every daemon gets its
own root_dir; snap's paths are relative to it, so the minions keep separate
keys on one machine.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil

from tests.conftest import REPO

MINIONS = ("web1", "db1", "backup1")


def write_pillar_tree(dest: pathlib.Path, extra: str = "") -> pathlib.Path:
    """The example pillar, plus ``extra`` YAML for this fleet in fleet.sls."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "pillar" / "snap.sls", dest / "snap.sls")
    (dest / "fleet.sls").write_text(extra or "{}\n")
    (dest / "top.sls").write_text("base:\n  '*':\n    - snap\n    - fleet\n")
    return dest


def master_overrides(pillar_root: pathlib.Path) -> dict:
    return {
        "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_root)]},
        "ext_pillar": [{"snap": {}}],
        "pillar_mask_output": False,
        "fileserver_followsymlinks": True,
    }


# Salt 3008 masks pillar values in output unless told not to (FIELD-NOTES).
MINION_OVERRIDES = {"pillar_mask_output": False}


class Fleet:
    """A started master and minions, with helpers to drive them."""

    def __init__(self, manager, root: pathlib.Path, minion_ids=MINIONS, pillar_extra: str = ""):
        self.manager = manager
        self.root = root
        self.minion_ids = tuple(minion_ids)
        self.pillar_root = write_pillar_tree(root / "pillar", pillar_extra)
        self.master = None
        self.minions = {}
        self._stack = contextlib.ExitStack()

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> Fleet:
        try:
            self.master = self.manager.salt_master_daemon(
                "snap-master", overrides=master_overrides(self.pillar_root)
            )
            self._stack.enter_context(self.master.started())
            for minion_id in self.minion_ids:
                minion = self.master.salt_minion_daemon(minion_id, overrides=MINION_OVERRIDES)
                self._stack.enter_context(minion.started())
                self.minions[minion_id] = minion
            self.sync()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self._stack.close()

    # -- driving -------------------------------------------------------------
    def salt(self, fun: str, *args, tgt: str = "*", timeout: int = 300, **kwargs):
        """Run ``salt <tgt> <fun> args``. For a glob, the data is ``{minion: return}``;
        for a single minion id (salt-factories unwraps it), that minion's return."""
        ret = self.master.salt_cli(timeout=timeout).run(fun, *args, minion_tgt=tgt, **kwargs)
        if ret.returncode != 0 and ret.data is None:
            raise AssertionError(f"salt {tgt} {fun} failed: {ret.stderr or ret.stdout}")
        return ret.data

    def run(self, fun: str, *args, **kwargs):
        """Run ``salt-run fun args`` and return its data."""
        ret = self.master.salt_run_cli(timeout=300).run(fun, *args, **kwargs)
        if ret.returncode != 0:
            raise AssertionError(f"salt-run {fun} failed: {ret.stderr or ret.stdout}")
        return ret.data

    def sync(self):
        """Sync snap's loader modules to the master and minions; refresh pillar and mine."""
        self.run("saltutil.sync_all")
        self.salt("saltutil.sync_all")
        self.salt("saltutil.refresh_pillar", wait=True)
        self.salt("mine.update")

    def highstate(self, tgt: str = "*", **kwargs):
        return self.salt("state.highstate", tgt=tgt, **kwargs)

    def root_of(self, minion_id: str) -> pathlib.Path:
        return pathlib.Path(self.minions[minion_id].config["root_dir"])


def state_failures(ret: dict) -> list:
    """Every failed state in a ``{minion: {state_id: result}}`` return."""
    bad = []
    for minion_id, states in ret.items():
        if not isinstance(states, dict):
            bad.append((minion_id, states))
            continue
        for state_id, result in states.items():
            if result.get("result") is False:
                bad.append((minion_id, state_id, result.get("comment")))
    return bad


def state_changes(ret: dict) -> list:
    """Every state that reported changes."""
    return [
        (minion_id, state_id, result["changes"])
        for minion_id, states in ret.items()
        if isinstance(states, dict)
        for state_id, result in states.items()
        if result.get("changes")
    ]
