"""
snap beacon: turns snap's run records into Salt events.

Pushes and archives run from cron, outside Salt, so that a backup never
depends on the master being up. This beacon, inside the salt-minion, watches
their records and fires one event per new run:

* ``salt/beacon/<id>/snap/push/done`` (``ok`` or ``partial``),
  ``.../push/failed``, ``.../push/skipped`` -- on servers;
* ``salt/beacon/<id>/snap/rotate/done`` or ``.../rotate/failed``,
  ``salt/beacon/<id>/snap/archive/done`` or ``.../archive/failed`` -- on the
  backup server.

Each run fires once, also across restarts (the ids seen are kept in
``<state_dir>/beacon-seen.json``). Configure it in pillar:

.. code-block:: yaml

    beacons:
      snap:
        - interval: 60
"""

import json
import logging
import os

# The snap core API these modules are written against (snap_core.api).
NEEDS_CORE_API = (2, 5)

try:
    from snap_core.api import incompatible
except ImportError:  # the execution module, unavailable too, says why
    incompatible = None

log = logging.getLogger(__name__)

__virtualname__ = "snap"

RECORDS = (
    ("push", "client", "push-last.json"),
    ("rotate", "server", "rotate-last.json"),
    ("archive", "server", "archive-last.json"),
)


def __virtual__():
    if "snap.settings" not in __salt__ or incompatible is None:
        return (False, "snap beacon: the snap execution module is not loaded (apply state snap.core)")
    stale = incompatible(NEEDS_CORE_API, __file__, "snap beacon")
    if stale:
        return (False, stale)
    return __virtualname__


def validate(config):
    if not isinstance(config, list):
        return False, "snap beacon configuration must be a list, e.g. [{interval: 60}]"
    return True, "valid"


def _kind(record_kind, record):
    result = record.get("result")
    if record_kind == "push":
        return {"ok": "done", "partial": "done", "skipped": "skipped"}.get(result, "failed")
    return "done" if result in ("ok", "partial") else "failed"


def beacon(config):
    """Fire an event for every run recorded since the last look."""
    settings = __salt__["snap.settings"]()
    seen_path = None
    events = []
    seen = {}
    for record_kind, role, name in RECORDS:
        state_dir = settings[role]["state_dir"]
        if seen_path is None:
            seen_path = os.path.join(state_dir, "beacon-seen.json")
            try:
                with open(seen_path, encoding="utf-8") as handle:
                    seen = json.load(handle)
            except (OSError, ValueError):
                seen = {}
        try:
            with open(os.path.join(state_dir, name), encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            continue
        run_id = record.get("run_id")
        if not run_id or seen.get(record_kind) == run_id:
            continue
        seen[record_kind] = run_id
        event = {
            "tag": f"{record_kind}/{_kind(record_kind, record)}",
            "run_id": run_id,
            "result": record.get("result"),
            "error": record.get("error"),
            "started": record.get("started"),
            "finished": record.get("finished"),
        }
        if record_kind == "push":
            event["transfer"] = record.get("transfer")
        if record_kind == "archive" and record.get("manifest"):
            event["archive"] = record["manifest"].get("archive", {}).get("key")
        if record_kind == "rotate":
            event["servers"] = {k: v.get("action") for k, v in (record.get("servers") or {}).items()}
        events.append(event)
    if events and seen_path:
        try:
            os.makedirs(os.path.dirname(seen_path), mode=0o700, exist_ok=True)
            tmp = seen_path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(seen, handle)
            os.replace(tmp, seen_path)
        except OSError as exc:
            log.warning("snap beacon: cannot remember runs in %s: %s", seen_path, exc)
    return events
