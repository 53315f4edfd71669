"""Status a hostile backup server cannot fake (docs/REPORTING.md).

Three sources, each out of reach of the others:

* each server's own push records (``push.jsonl`` in its state directory),
  which the master asks for directly or reads from the Salt mine
  (``snap.push_history``);
* the backup server's receipts and archive record (``snap.backup_view``);
* the off-site listing, read with a read-only identity on the drill minion
  (``snap.offsite_inventory``): the store's own landing times and the locked
  manifests.

The comparison itself is in the core (``snap_core::crosscheck``); this module
reads and reshapes the sources and marks the status table.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

from snap_core import _rust

SUSPECT = "SUSPECT"
EVENT_TAG = "snap/status/suspect"
# Enough to reach back past the newest receipt: three pushes a day, a week.
HISTORY_LIMIT = 21
_TAIL_BYTES = 256 << 10


def _unix(text) -> float | None:
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None  # a hostile manifest's "time": judged as unknown, never fatal


def read_push_history(state_dir: str | os.PathLike, limit: int = HISTORY_LIMIT) -> list[dict]:
    """The newest ``limit`` push records of this server, oldest first, cut
    to what the cross-check and the status note need (no paths, no hooks).
    Reads only the tail of ``push.jsonl``; unreadable lines are skipped."""
    path = os.path.join(os.fspath(state_dir), "push.jsonl")
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return []
    lines = tail.split(b"\n")
    if size > _TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
            out.append({
                "run_id": str(rec["run_id"]),
                "started": rec["started"],
                "finished": rec.get("finished") or rec["started"],
                "result": str(rec.get("result")),
                "error": rec.get("error"),
                # Where it pushed (host:port): what says an old backup server's history of it is real.
                "server": str(rec.get("server") or "")[:300],
            })  # fmt: skip
        except (ValueError, KeyError, TypeError):
            continue
    return out[-limit:] if limit else out


def offsite_inventory(store, prefix: str) -> list[dict]:
    """Every archive under ``prefix`` as the store lists it (``store``: an
    ``ArchiveStore`` with a read-only identity): key, landed (the store's
    time), created (the manifest's), snapshots per server, error."""
    return [
        {
            "key": row["key"],
            "landed": _unix(row.get("landed")),
            "created": _unix(row.get("created")),
            "servers": dict(row.get("server_snapshots") or {}),
            "error": row.get("error"),
            "tampered": row.get("tampered"),
            "unchecked": row.get("unchecked"),
        }
        for row in store.list(prefix, True)
    ]


def _own(records) -> list[dict] | None:
    if not isinstance(records, list):
        return None
    out = []
    for r in records:
        try:
            rec = {"run_id": str(r["run_id"]), "started": _unix(r["started"]),
                   "finished": _unix(r.get("finished") or r["started"]), "result": str(r["result"])}  # fmt: skip
        except (KeyError, TypeError, ValueError):
            continue
        if rec["started"] is not None and rec["finished"] is not None:
            out.append(rec)
    out.sort(key=lambda r: r["started"])
    return out


def check(
    servers,
    view: Mapping[str, Any],
    own: Mapping[str, Any],
    archive: Mapping | None,
    offsite: list | None,
    now: float,
    skew_seconds: float = 600,
) -> dict:
    """{findings: [{server, sources, message}], compared: [...]} for the
    servers in ``servers``. ``own``: {id: push records, or None if unknown};
    ``view``: the backup server's servers view; ``offsite``: the inventory,
    or None when it could not be read."""
    src: dict[str, Any] = {"now": now, "skew_seconds": skew_seconds, "servers": {}, "archive": None, "offsite": offsite}
    for minion_id in servers:
        good = ((view.get(minion_id) or {}).get("last_good")) or None
        src["servers"][minion_id] = {
            "own": _own(own.get(minion_id)),
            "received": {"run_id": str(good.get("run_id") or ""), "started": good["started"]} if good else None,
        }
    if archive:
        obj = (archive.get("manifest") or {}).get("archive") or {}
        # A chain link is listed by its manifest's key, the one its run recorded.
        key = archive.get("manifest_key") if archive.get("chain") else obj.get("key")
        src["archive"] = {"result": str(archive.get("result")), "key": key,
                          "finished": _unix(archive.get("finished")) or 0.0}  # fmt: skip
    return _rust.crosscheck_status(json.dumps(src))


def mark(table: dict, result: Mapping, offsite_note: str | None = None) -> list[dict]:
    """Mark the servers and the archive row a finding concerns SUSPECT (the
    finding is the note) and add the ``crosscheck`` section; returns the
    events to fire, one per suspect subject."""
    by_subject: dict[str | None, list] = {}
    for f in result["findings"]:
        by_subject.setdefault(f["server"], []).append(f)
    for row in table["servers"]:
        found = by_subject.get(row["server"])
        if found:
            row["state"] = SUSPECT
            row["note"] = "; ".join(f["message"] for f in found) + (f" (was: {row['note']})" if row["note"] else "")
    if None in by_subject:
        table["archive"]["archive_state"] = SUSPECT
        table["archive"]["error"] = "; ".join(f["message"] for f in by_subject[None])
    table["crosscheck"] = {
        "compared": list(result["compared"]),
        "findings": len(result["findings"]),
        "offsite": offsite_note or "read",
    }
    if result["findings"]:
        table["ok"] = False
    return [
        {
            "subject": subject or "archive",
            "sources": sorted({s for f in found for s in f["sources"]}),
            "findings": [f["message"] for f in found],
        }  # fmt: skip
        for subject, found in by_subject.items()
    ]
