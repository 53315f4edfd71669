"""
snap ext_pillar: every minion's backup schedule.

Each minion gets ``snap:schedule:minute`` = ``crc32(key) % slots``,
``snap:schedule:hours``, and ``snap:schedule:second`` = ``(crc32(key) // slots) % 60``,
the seconds its push waits into its minute so that servers sharing a minute
still spread over it. The key is the minion id by default: ids are unique
in Salt, hostnames are not (two ``web1`` in different domains would share a
minute and, worse, nothing would tell you).

Master configuration:

.. code-block:: yaml

    ext_pillar:
      - snap:
          hours: [2, 10, 18]   # default
          slots: 60            # default; 59 avoids piling onto minute 0
          key: id              # or: hostname (the hostname grain)

Per-minion pillar ``snap:schedule:hours`` / ``snap:schedule:slots`` (from the
pillar tree) overrides the options above for that minion.

Several backup servers: when the pillar tree gives a minion
``snap:backup_servers`` (``{minion id: {host, port, host_keys}}``) and
optionally ``snap:assignment`` (``{minion id: backup server}``), the minion
also gets ``snap:backup_server``: the one it is assigned to (the explicit map,
else rendezvous hashing, ``snap_core.assign_backup_server``; a backup server is
its own). Every backup server makes accounts only for the servers assigned to
it (docs/SCALE.md).

Mine functions by role: every minion also gets ``mine_functions``. A backup
server (the minion its own ``snap:backup_server:minion_id`` names)
publishes ``snap.hostkey`` (servers pin it) and ``snap.accounts`` (each
server's account name); every other minion ``snap.pubkey`` (its snap key)
and ``snap.push_history`` (its own push records, for status). So a backup
server added to ``snap:backup_servers`` needs no change anywhere else (the
example top file reads the same pillar). Other mine functions of your own
merge beside these.

An invalid setting raises, so the minion's pillar carries the error and
highstate refuses to run rather than silently schedule nothing.
"""

import logging

# The snap core API these modules are written against (snap_core.api).
NEEDS_CORE_API = (2, 5)

try:
    import snap_core
    from snap_core.api import incompatible

    HAS_CORE = True
    IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover
    HAS_CORE = False
    IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "snap"

DEFAULT_HOURS = [2, 10, 18]
DEFAULT_SLOTS = 60
KEYS = ("id", "hostname")


def __virtual__():
    if not HAS_CORE:
        return (
            False,
            "snap ext_pillar: the snap_core package is not importable by the master's Python "
            f"({IMPORT_ERROR}); install or upgrade the snap wheel on the master",
        )
    stale = incompatible(NEEDS_CORE_API, __file__, "snap ext_pillar")
    if stale:
        return (False, stale)
    return __virtualname__


# What each role publishes through the mine (who reads it validates it again).
MINE_FUNCTIONS = {
    "backup_server": {"snap.hostkey": [], "snap.accounts": []},
    "server": {"snap.pubkey": [], "snap.push_history": []},
}


def _int_list(value, what):
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"snap ext_pillar: {what} must be a list of integers, got {value!r}")
    return list(value)


def ext_pillar(minion_id, pillar, hours=None, slots=None, key="id", **kwargs):
    """
    Return ``{"snap": {"schedule": {...}}}`` for ``minion_id``.
    """
    if kwargs:
        raise ValueError(f"snap ext_pillar: unknown options {sorted(kwargs)}")
    own = (pillar.get("snap") or {}).get("schedule") or {}
    hours = own.get("hours", hours if hours is not None else DEFAULT_HOURS)
    slots = own.get("slots", slots if slots is not None else DEFAULT_SLOTS)
    key = own.get("key", key)
    if key not in KEYS:
        raise ValueError(f"snap ext_pillar: key must be one of {KEYS}, got {key!r}")
    if not isinstance(slots, int) or isinstance(slots, bool) or not 1 <= slots <= 60:
        raise ValueError(f"snap ext_pillar: slots must be an integer from 1 to 60, got {slots!r}")
    hours = snap_core.validate_hours(_int_list(hours, "hours"))
    if key == "id":
        source = minion_id
    else:
        # An operator-set "hostname" grain wins; otherwise Salt's short hostname ("host").
        source = __grains__.get("hostname") or __grains__.get("host") or ""
        if not source:
            raise ValueError(f"snap ext_pillar: minion {minion_id!r} has no hostname grain")
    minute = snap_core.backup_minute(source, slots)
    second = snap_core.backup_splay(source, slots)
    log.debug("snap ext_pillar: %s -> minute %s second %s (key %s=%r)", minion_id, minute, second, key, source)
    out = {"schedule": {"minute": minute, "second": second, "hours": hours, "slots": slots, "key": key}}
    out.update(_assigned_backup_server(minion_id, pillar.get("snap") or {}))
    backup = (out.get("backup_server") or ((pillar.get("snap") or {}).get("backup_server") or {})).get("minion_id")
    role = "backup_server" if backup is not None and str(backup) == minion_id else "server"
    if role == "server" and backup is not None:
        _remember(minion_id, str(backup))
    return {"snap": out, "mine_functions": dict(MINE_FUNCTIONS[role])}


def _remember(minion_id, backup):
    """The master's record of every backup server this server was assigned
    to (``<cachedir>/snap/assigned/<id>``): what says, after a move, that
    the old backup server's history of it is real and not that backup
    server's word only (docs/SCALE.md). Never fails the pillar."""
    from snap_core import fleet

    cachedir = __opts__.get("cachedir")  # a master always has one
    if not cachedir:
        return
    try:
        fleet.remember_assignment(cachedir, minion_id, backup)
    except (OSError, ValueError) as exc:
        log.warning("snap ext_pillar: cannot record that %s is assigned to %s: %s", minion_id, backup, exc)


def _assigned_backup_server(minion_id, snap):
    """``{"backup_server": {...}}`` from ``snap:backup_servers`` (none: {})."""
    from snap_core import fleet

    try:
        assignment = fleet.backup_assignment(snap)
    except snap_core.InvalidInput as exc:
        raise ValueError(f"snap ext_pillar: {exc}") from exc
    if assignment is None:
        return {}
    chosen = fleet.assigned_backup_server(minion_id, *assignment)
    entry = {str(k): v for k, v in snap["backup_servers"].items()}[chosen]
    return {
        "backup_server": {
            "minion_id": chosen,
            "host": entry.get("host") or chosen,
            "port": entry.get("port") or 22,
            "host_keys": list(entry.get("host_keys") or []),
        }
    }
