"""The fleet's backup status table, from what the master gathered.

Inputs (all plain data, so this is testable with an injected clock):

* ``minions``: every server the master knows (accepted keys), minus the
  backup server;
* ``schedules``: ``{id: {minute, second, hours}}`` from the mine (a server
  that never published one has no schedule yet);
* ``view``: the backup server's own view (``snap_core.backup_server_view``):
  receipts written on the receiving side, the jail's lock, history;
* ``clients``: each server's own last push record when it answered (only
  adds *why* something failed; the verdict does not depend on it answering);
* ``archive``: the backup server's last archive record.

The verdict for each server comes from the core (``assess_status``).
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from snap_core import _rust

NOT_OK = ("LATE", "MISSING", "FAILED", "NEVER", "SUSPECT")


def _ts(value) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(value)) + "Z"


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60}m"
    return f"{seconds // 60}m"


def _unix(text):
    """Seconds since the epoch of an RFC 3339 time; None for anything else
    (records come from other machines: a malformed time is unknown, never fatal)."""
    if not text:
        return None
    import datetime

    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, TypeError):
        return None


def observed(server_view: Mapping | None, client_record: Mapping | None) -> dict:
    """The core's Observed from the backup server's view, plus the server's
    own record of a failure that never reached the backup server."""
    seen = {"last_good": None, "last_failed": None, "failure": None, "running_since": None}
    if server_view:
        good = server_view.get("last_good") or {}
        seen["last_good"] = good.get("started")
        failed = server_view.get("last_failed") or {}
        seen["last_failed"] = failed.get("at")
        seen["failure"] = failed.get("reason")
        seen["running_since"] = server_view.get("running_since")
    if client_record and client_record.get("result") in ("failed",):
        started = _unix(client_record.get("started"))
        if started and (seen["last_failed"] is None or started > seen["last_failed"]):
            seen["last_failed"] = started
            seen["failure"] = f"the server reports: {client_record.get('error')}"
    return seen


def build(
    minions,
    schedules: Mapping[str, Any],
    view: Mapping[str, Any],
    clients: Mapping[str, Any],
    archive: Mapping | None,
    now: float | None = None,
    thresholds: Mapping | None = None,
    archive_expected: bool = False,
    archive_max_age: float = 17 * 86400,
) -> dict:
    """{"servers": [rows], "archive": {...}, "ok": bool}.

    ``archive_expected``: an off-site target is configured, so no archive (or
    one older than ``archive_max_age`` seconds) is not OK."""
    now = time.time() if now is None else now
    limits = json.dumps(thresholds) if thresholds else None
    rows = []
    for minion_id in sorted(set(minions) | set(view)):
        sched = schedules.get(minion_id)
        server_view = view.get(minion_id)
        client = clients.get(minion_id)
        seen = observed(server_view, client if isinstance(client, Mapping) else None)
        row = {"server": minion_id}
        if not sched:
            row.update(schedule="-", state="NEVER", last_good_push="-", age="-", missed_slots=0,
                       note="no schedule in the mine: not highstated as a snap client")  # fmt: skip
        else:
            verdict = _rust.assess_status(json.dumps(sched), json.dumps(seen), now, limits)
            hours = ",".join(str(h) for h in sched["hours"])
            row.update(
                schedule=f"{sched['minute']:02d} past {hours}",
                state=verdict["state"],
                last_good_push=_ts(seen["last_good"]),
                age=_age(verdict["age_seconds"]),
                missed_slots=verdict["missed_slots"],
                note=verdict["note"] or ("no account on the backup server" if server_view is None else ""),
            )
            if server_view is None and verdict["state"] == "OK":
                row["state"] = "NEVER"
        if client is None:
            row["note"] = (row["note"] + "; " if row["note"] else "") + "server did not answer"
        rows.append(row)
    arc = {"last_archive": "-", "retain_until": "-", "archive_state": "NEVER" if archive_expected else "NOT CONFIGURED"}
    if archive:
        manifest = archive.get("manifest") or {}
        obj = manifest.get("archive") or {}
        finished = _unix(archive.get("finished"))
        state = "OK" if archive.get("result") == "ok" else "FAILED"
        if state == "OK" and finished is None:
            state = "FAILED"  # a record that cannot say when is no proof of anything
        elif state == "OK" and now - finished > archive_max_age:
            state = "LATE"
        arc = {
            "last_archive": archive.get("finished", "-"),
            "retain_until": obj.get("retain_until") or "-",
            "archive_state": state,
            "archive_key": obj.get("key") or "-",
        }
        arc.update(_chain_and_cost(archive, now))
        if archive.get("result") != "ok":
            arc["error"] = archive.get("error")
        elif finished is None:
            arc["error"] = f"the backup server's archive record has no valid finish time: {archive.get('finished')!r}"
    ok = all(r["state"] == "OK" for r in rows) and arc["archive_state"] in ("OK", "NOT CONFIGURED")
    return {"servers": rows, "archive": arc, "ok": ok}


def _chain_and_cost(archive: Mapping, now: float) -> dict:
    """For the archive row: what is held under lock and its monthly cost
    (the run's estimate), and for a chain link the chain's age, its dead
    share and what the last link uploaded. The record is the backup
    server's word: anything malformed is left out, never fatal."""
    out: dict = {}
    try:
        storage = archive.get("storage") or {}
        if storage:
            out["held_bytes"] = int(storage["bytes_locked"])
            out["monthly_usd"] = round(float(storage["monthly_usd"]), 2)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        pass
    try:
        chain = archive.get("chain") or {}
        if not chain:
            return out
        info = chain["chain"]
        base = _unix(info.get("base_created"))
        own = [p for p in chain.get("pieces") or [] if p.get("link") == info.get("link")]
        out["archive_key"] = str(archive.get("manifest_key") or "-")
        out["retain_until"] = str(info.get("restorable_until") or "-")
        out["chain"] = {
            "id": str(info.get("id")),
            "link": int(info.get("link")),
            "age_days": round((now - base) / 86400, 1) if base is not None else None,
            "dead_ratio": round(float((chain.get("image") or {}).get("dead_ratio") or 0.0), 3),
            "last_link_bytes": sum(int(p.get("size") or 0) for p in own),
        }
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        out["chain"] = {"error": "the archive record's chain could not be read"}
    return out


MAX_HELD = 10_000


def history_elsewhere(held: Mapping[str, Any] | None) -> dict:
    """``{minion id: newest push in history}`` from a backup server's ``held``
    (servers with no account there any more: its word). Only valid minion
    ids, at most ``MAX_HELD`` of them, times cut to 40 characters; anything
    malformed is left out."""
    out = {}
    for minion_id, rec in (held or {}).items() if isinstance(held, Mapping) else ():
        if len(out) >= MAX_HELD:
            break
        if not (isinstance(minion_id, str) and isinstance(rec, Mapping)):
            continue
        try:
            _rust.validate_minion_id(minion_id)
        except ValueError:
            continue
        out[minion_id] = str(rec.get("synced") or rec.get("pushed_finished") or "-")[:40]
    return out


def merge(tables: Mapping[str, Mapping], held: Mapping[str, Mapping] | None = None) -> dict:
    """One fleet-wide table from each backup server's (``{backup server:
    table from build}``): every server's row as the backup server it is
    assigned to judges it, marked with that ``backup_server``, and
    ``older_history``: the other backup servers whose history still holds
    it (a server that moved: its history there ages out with rotation).
    ``held`` is ``{backup server: history_elsewhere(...)}``. A server only
    held (gone from the fleet) gets a row of its own that does not count
    against ``ok``. One archive row per backup server."""
    rows, archives = [], []
    for backup, table in sorted(tables.items()):
        for row in table.get("servers") or []:
            rows.append(dict(row, backup_server=backup))
        archives.append(dict(table.get("archive") or {}, backup_server=backup))
    older: dict[str, list[str]] = {}
    for backup, servers in sorted((held or {}).items()):
        for minion_id, synced in sorted(servers.items()):
            older.setdefault(minion_id, []).append(f"{backup} (newest {synced})")
    seen = set()
    for row in rows:
        seen.add(row["server"])
        row["older_history"] = ", ".join(
            where for where in older.get(row["server"], ()) if not where.startswith(f"{row['backup_server']} (")
        )
    for minion_id in sorted(set(older) - seen):
        rows.append({"server": minion_id, "backup_server": "-", "state": "HISTORY ONLY", "schedule": "-",
                     "last_good_push": "-", "age": "-", "missed_slots": 0,
                     "note": "no longer in the fleet", "older_history": ", ".join(older[minion_id])})  # fmt: skip
    rows.sort(key=lambda r: (r["server"], r["backup_server"]))
    ok = all(bool(t.get("ok")) for t in tables.values()) and bool(tables)
    return {"servers": rows, "archives": archives, "backup_servers": sorted(tables), "ok": ok}
