"""A throwaway snap fleet on loopback: a real salt-master and minions.

Used by the integration tests (through pytest-salt-factories' manager) and by
``make demo`` (which builds the same manager itself). Every daemon gets its
own root_dir; snap's paths are relative to it, so the minions keep separate
keys on one machine.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil

from pytestshellutils.utils.ports import get_unused_localhost_port

from tests.conftest import REPO
from tests.support import loopfs, system, treegen

MINIONS = ("web1", "db1", "backup1")
BACKUP_SERVER = "backup1"
CLIENTS = tuple(m for m in MINIONS if m != BACKUP_SERVER)

# Pillar for a fleet on one machine: the backup server's sshd on a loopback
# port, each client backing up its own data directory, quick retries.
FLEET_PILLAR = """
snap:
  backup_server:
    minion_id: backup1
    host: 127.0.0.1
    port: @PORT@
  client:
    paths:
      - @DATA@/{{ grains["id"] }}/srv
    retries: 1
    retry_delay: 1
    connect_timeout: 5
  server:
    manage_sshd_service: false
    lock_wait: 2
    # A 2 GiB history filesystem: keep the reserve in proportion.
    reserve: {min_free_bytes: 16777216, min_free_percent: 1, min_free_inodes_percent: 1}
    # sudo reads only /etc/sudoers.d: this fleet's rule goes there, and goes again.
    sudoers: @SUDOERS@
beacons:
  snap:
    - interval: 2
"""


def write_pillar_tree(dest: pathlib.Path, extra: str = "") -> pathlib.Path:
    """The example pillar, ``extra`` YAML for this fleet in fleet.sls, and an
    empty local.sls that tests and the demo fill at run time (set_pillar)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "pillar" / "snap.sls", dest / "snap.sls")
    (dest / "fleet.sls").write_text(extra or "{}\n")
    (dest / "local.sls").write_text("{}\n")
    (dest / "top.sls").write_text("base:\n  '*':\n    - snap\n    - fleet\n    - local\n")
    return dest


def master_overrides(pillar_root: pathlib.Path, alerts: pathlib.Path, file_root: pathlib.Path | None = None) -> dict:
    alert = "salt://reactor/snap-alert.sls"
    return {
        # The formula; snap's modules come with the wheel (salt.loader entry point).
        "file_roots": {"base": [str(file_root or REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_root)]},
        "ext_pillar": [{"snap": {}}],
        "pillar_mask_output": False,
        "fileserver_followsymlinks": True,
        # The example reactor, with an alert command that files each alert.
        "reactor": [
            {f"salt/beacon/*/snap/{what}": [alert]}
            for what in ("push/failed", "push/skipped", "rotate/failed", "archive/failed")
        ]
        + [{"snap/status/suspect": [alert]}],
        "snap_alert_command": f'cat > "{alerts}/$(echo "$SNAP_EVENT_TAG" | tr / _)-$(date +%s%N).json"',
    }


# Salt 3008 masks pillar values in output unless told not to (FIELD-NOTES).
MINION_OVERRIDES = {"pillar_mask_output": False}


class Fleet:
    """A started master and minions, the backup server's sshd on loopback, and
    each client's data; with helpers to drive them. Users, groups and root's
    crontab lines created meanwhile are removed on exit.

    By default every daemon runs from the Python running this code. ``pythons``
    maps a daemon (``"master"`` or a minion id) to another interpreter, as
    ``make demo`` does to give each machine a Python of its own with only Salt
    in it; ``file_root`` replaces the repository's formula."""

    def __init__(self, manager, root: pathlib.Path, minion_ids=MINIONS, pythons=None, file_root=None):
        self.manager = manager
        self.root = root
        self.minion_ids = tuple(minion_ids)
        self.clients = tuple(m for m in self.minion_ids if m != BACKUP_SERVER)
        self.port = get_unused_localhost_port()
        self.data = root / "data"
        self.alerts = root / "alerts"  # what the example reactor's alert command files
        self.sudoers = pathlib.Path(f"/etc/sudoers.d/snap-test-{self.port}")
        pillar = (
            FLEET_PILLAR.replace("@PORT@", str(self.port))
            .replace("@DATA@", str(self.data))
            .replace("@SUDOERS@", str(self.sudoers))
        )
        self.pillar_root = write_pillar_tree(root / "pillar", pillar)
        self.pythons = dict(pythons or {})
        self.file_root = file_root
        self.master = None
        self.minions = {}
        self.sshd = None
        self._stack = contextlib.ExitStack()

    def client_data(self, minion_id: str) -> pathlib.Path:
        """What ``minion_id`` backs up (pillar snap:client:paths)."""
        return self.data / minion_id / "srv"

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> Fleet:
        try:
            self._stack.enter_context(system.restored_root_crontab())
            self._stack.enter_context(system.removed_new_users_and_groups())
            self._stack.callback(self.sudoers.unlink, missing_ok=True)
            # Push accounts must be able to reach their jails under root_dir.
            for path in (self.root, *self.root.parents):
                if path == pathlib.Path("/"):
                    break
                os.chmod(path, os.stat(path).st_mode | 0o111)
            for seed, minion_id in enumerate(self.clients):
                treegen.make_server_tree(self.client_data(minion_id), seed=seed)
            self.alerts.mkdir(parents=True, exist_ok=True)
            self.master = self.manager.salt_master_daemon(
                "snap-master", overrides=master_overrides(self.pillar_root, self.alerts, self.file_root)
            )
            if "master" in self.pythons:
                self.master.python_executable = str(self.pythons["master"])
            self._stack.enter_context(self.master.started())
            for minion_id in self.minion_ids:
                minion = self.master.salt_minion_daemon(minion_id, overrides=MINION_OVERRIDES)
                if minion_id in self.pythons:
                    minion.python_executable = str(self.pythons[minion_id])
                self._stack.enter_context(minion.started())
                self.minions[minion_id] = minion
            if BACKUP_SERVER in self.minions:
                # Jails on btrfs (per-jail quotas), history on a filesystem of its own.
                backup = self.root_of(BACKUP_SERVER) / "srv" / "snap"
                self._stack.enter_context(loopfs.mounted("btrfs", backup / "jails", "2G"))
                self._stack.enter_context(loopfs.mounted("ext4", backup / "history", "2G"))
                self.sshd = self._stack.enter_context(system.Sshd(self.root_of(BACKUP_SERVER), self.port))
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
        """Refresh pillar and mine. Nothing to sync: snap's loader modules come
        with the wheel (salt.loader entry point), not from the file roots."""
        self.salt("saltutil.refresh_pillar", wait=True)
        self.salt("mine.update")

    def set_pillar(self, text: str, tgt: str = "*"):
        """Replace local.sls (YAML, merged last) and refresh the pillar of the
        minions ``tgt`` names (every minion by default; a test that adds
        accepted ids that never answer names the live ones, or each call
        waits out Salt's timeout for them)."""
        (self.pillar_root / "local.sls").write_text(text or "{}\n")
        self.salt("saltutil.refresh_pillar", wait=True, tgt=tgt)

    def highstate(self, tgt: str = "*", **kwargs):
        return self.salt("state.highstate", tgt=tgt, **kwargs)

    def deploy(self) -> dict:
        """First setup of a new fleet, as the README says: highstate the backup
        server (snap.core gives it snap's modules) and publish its SSH host key
        through the mine; highstate the servers (they get the core, make their
        keys and pin that host key); publish their keys; highstate the backup
        server again so it creates their accounts, and let its sshd read its
        new configuration. Returns every run."""
        # One at a time: on this one machine every minion edits root's
        # crontab, and concurrent edits would lose lines.
        runs = {"first": {}}
        if BACKUP_SERVER in self.minions:
            runs["first"][BACKUP_SERVER] = self.highstate(tgt=BACKUP_SERVER)
            self.salt("mine.update", tgt=BACKUP_SERVER)
        for minion_id in self.clients:
            runs["first"][minion_id] = self.highstate(tgt=minion_id)
        self.salt("mine.update")
        runs["accounts"] = {BACKUP_SERVER: self.highstate(tgt=BACKUP_SERVER)}
        if self.sshd:
            self.sshd.reload()
        return runs

    def root_of(self, minion_id: str) -> pathlib.Path:
        return pathlib.Path(self.minions[minion_id].config["root_dir"])

    def python_of(self, minion_id: str) -> str:
        """The Python that runs this minion (where snap.core installs the core)."""
        return str(self.pythons.get(minion_id) or self.minions[minion_id].python_executable)


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
