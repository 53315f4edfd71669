"""The body of ``salt-run snap.status`` (``_runners/snap.py`` stays thin):
one backup server's table, and the fleet-wide table over several.

Every function takes what the runner has (its ``__salt__`` and ``__opts__``)
as arguments; nothing here is a loader module.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time

from salt.exceptions import SaltClientError, SaltInvocationError, SaltReqTimeoutError

from snap_core import _rust, crosscheck, fleetstatus
from snap_core import errors as snap_errors
from snap_core import fleet as snap_fleet

log = logging.getLogger(__name__)


MAX_UNKNOWN_ROWS = 1_000

# A busy master can time out a request (SaltClientError: "The salt master
# could not be contacted"; SaltReqTimeoutError from a mine read). Everything
# status asks is read-only, so asking again is harmless; after the last try
# the error names what was asked.
PUBLISH_TRIES = 3
PUBLISH_PAUSE = 2.0
BUSY = (SaltClientError, SaltReqTimeoutError)


def again(what, call, *args, **kwargs):
    """``call(*args, **kwargs)``, read-only: a request the master does not
    take in time is made again (``PUBLISH_TRIES`` in all), then a
    ``SaltClientError`` naming ``what``."""
    for attempt in range(1, PUBLISH_TRIES + 1):
        try:
            return call(*args, **kwargs)
        except BUSY as exc:
            if attempt == PUBLISH_TRIES:
                raise SaltClientError(f"{what}: no answer from the master ({attempt} tries): {exc}") from exc
            log.warning("snap: %s failed (try %d of %d): %s", what, attempt, PUBLISH_TRIES, exc)
            time.sleep(PUBLISH_PAUSE * attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def no_collection_midway():
    """No cyclic garbage collection inside: it runs after, at a quiet point.

    Python 3.11 breaks an import when the collector runs, in the middle of
    it, a ``__del__`` that imports too (CPython gh-91351, fixed in 3.12): the
    import fails with ``KeyError`` in ``importlib._bootstrap``. Compiling
    pillar imports Salt's renderers, and Salt's pillar and file client
    objects import in ``__del__``; CI saw ``salt-run snap.status`` fail so
    ("The renderer jinja|yaml is unavailable")."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
            gc.collect()


def ask(client, tgt, fun, **kwargs):
    """``client.cmd(tgt, fun, **kwargs)`` for a read-only ``fun``, asked again
    when the master is busy (``again``)."""
    return again(f"publishing {fun} to {tgt}", client.cmd, tgt, fun, **kwargs)


def valid_id(minion_id):
    try:
        _rust.validate_minion_id(minion_id)
    except (ValueError, TypeError):
        return False
    return True


def accepted_minions(opts):
    import salt.wheel

    keys = salt.wheel.WheelClient(opts).cmd("key.list", ["accepted"], print_event=False)
    return keys.get("minions", []) if isinstance(keys, dict) else []


def valid_schedule(value):
    if not isinstance(value, dict):
        return None
    minute, second, hours = value.get("minute"), value.get("second", 0), value.get("hours")
    if not (isinstance(minute, int) and isinstance(second, int) and isinstance(hours, list)
            and all(isinstance(h, int) for h in hours)):  # fmt: skip
        return None
    return {"minute": minute, "second": second, "hours": hours}


def offsite_reader(backup, offsite, pillar):
    """The minion that lists off-site with a read-only identity: ``offsite``,
    else pillar ``snap:verify:minion`` of the backup server (``pillar``, as
    the master compiles it); never the backup server itself. (None, why)
    when there is none."""
    if offsite is False or offsite == "":
        return None, "not read (offsite=False)"
    if not offsite:
        verify = (pillar.get("snap") or {}).get("verify") or {}
        offsite = verify.get("minion") if verify.get("target") else None
    if not offsite:
        return (
            None,
            "not read: no reader (pillar snap:verify:minion with a read-only snap:verify:target, or offsite=<minion>)",
        )
    if offsite == backup:
        return None, f"not read: {offsite} is the backup server, whose word is what is being checked"
    return offsite, None


def archive_prefix(backup, pillar):
    """Where ``backup`` archives (its pillar ``snap:archive:prefix``, else
    ``snap/<its id>``), with the trailing slash listings take."""
    prefix = ((pillar.get("snap") or {}).get("archive") or {}).get("prefix") or f"snap/{backup}"
    return str(prefix).rstrip("/") + "/"


def servers_of(tgt, pillar, minions):
    """With several backup servers (``snap:backup_servers`` in ``tgt``'s
    pillar as the master compiles it), the servers assigned to ``tgt`` (the
    ext_pillar's choice); other backup servers are nobody's servers. A
    malformed id stays in (status shows it rejected)."""
    try:
        assignment = snap_fleet.backup_assignment(pillar.get("snap") or {})
    except snap_errors.InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc
    if assignment is None:
        return minions
    backups, explicit = assignment
    kept = []
    for m in minions:
        if m in backups:
            continue
        try:
            if snap_fleet.assigned_backup_server(m, backups, explicit) != tgt:
                continue
        except ValueError:  # InvalidInput is one
            if m in explicit:
                continue
        kept.append(m)
    return kept


def status_policy(pillar):
    """Who is left out, when a server is late, whether an archive is due: from
    the backup server's pillar as the master compiles it."""
    snap = pillar.get("snap") or {}
    status = snap.get("status") or {}
    return {
        "exclude": set((snap.get("server") or {}).get("exclude") or []),
        "thresholds": {k: v for k, v in status.items() if k in ("grace_seconds", "missing_after", "timezone")},
        "archive_expected": bool((snap.get("archive") or {}).get("target")),
    }


def status_one(salt_, opts, tgt, now=None, timeout=15, offsite=None, prefix=None, accepted=None, pillar=None):
    """One backup server's table (``fleetstatus.build``, cross-checked), with
    ``held``: what its history holds of servers with no account there.
    ``pillar``: the backup server's, when the caller compiled it already."""
    import salt.client

    # The backup server's pillar, compiled here once: the policy and the reader.
    if pillar is None:
        pillar = salt_["pillar.show_pillar"](minion=tgt) or {}
    reader, offsite_note = offsite_reader(tgt, offsite, pillar)
    accepted = accepted_minions(opts) if accepted is None else accepted
    minions = servers_of(tgt, pillar, [m for m in accepted if m != tgt])
    with salt.client.get_local_client(opts["conf_file"]) as client:
        view = ask(client, tgt, "snap.backup_view", timeout=timeout)
        records = ask(client, minions, "snap.push_history", tgt_type="list", timeout=timeout) if minions else {}
        kwarg = {"prefix": prefix} if prefix else {}
        listing = (
            ask(client, reader, "snap.offsite_inventory", kwarg=kwarg, timeout=max(int(timeout), 120)) if reader else {}
        )
    if tgt not in view or not isinstance(view[tgt], dict):
        return {"error": f"backup server {tgt} did not answer: {view.get(tgt)}", "retcode": 2}
    view = view[tgt]
    # What to judge by is the master's word (pillar it compiles), never the
    # backup server's answer: it could drop a server or stretch the grace.
    policy = status_policy(pillar)
    minions = [m for m in minions if m not in policy["exclude"]]
    mine = again("reading the mine", salt_["mine.get"], "*", snap_fleet.MINE_FUNCTION)
    schedules = {m: valid_schedule((mine.get(m) or {}).get("schedule")) for m in minions}
    # Each server's own records: its answer now, else what it last put in the mine.
    published = again("reading the mine", salt_["mine.get"], "*", "snap.push_history")
    own = {}
    for m in minions:
        answer = records.get(m)
        own[m] = (
            answer if isinstance(answer, list) else published.get(m) if isinstance(published.get(m), list) else None
        )
    clients = {m: own[m][-1] if own[m] else None for m in minions if own[m] is not None}
    thresholds = policy["thresholds"]
    at = float(now) if now is not None else time.time()
    servers = view.get("servers") if isinstance(view.get("servers"), dict) else {}
    table = fleetstatus.build(
        minions,
        {m: s for m, s in schedules.items() if s},
        servers,
        clients,
        view.get("archive"),
        now=at,
        thresholds=thresholds or None,
        archive_expected=policy["archive_expected"],
    )
    inventory = None
    if reader:
        inventory = listing.get(reader)
        if not isinstance(inventory, list):
            offsite_note = f"not read: {reader} answered {inventory!r}"
            inventory = None
            table["ok"] = False  # a configured source that cannot be read cannot vouch
        else:
            offsite_note = f"read by {reader}: {len(inventory)} archives"
    result = crosscheck.check(minions, servers, own, view.get("archive"), inventory, at)
    for event in crosscheck.mark(table, result, offsite_note):
        log.warning("snap status: %s is SUSPECT: %s", event["subject"], "; ".join(event["findings"]))
        salt_["event.send"](crosscheck.EVENT_TAG, event)
    held = fleetstatus.history_elsewhere(view.get("held"))
    if held:
        table["history_only"] = held
    # Where each server says it pushed (its own records): what a claim of
    # another backup server to hold its older history is checked against.
    table["_pushed_to"] = {m: pushed_to(own[m]) for m in minions}
    return table


def pushed_to(records):
    """The backup servers (host:port) a server's own records say it pushed
    to completely."""
    return sorted(
        {str(r.get("server")) for r in records or [] if isinstance(r, dict) and r.get("server")
         and r.get("result") in ("ok", "partial")}
    )  # fmt: skip


def confirmed(opts, minion_id, backup, where, pushed):
    """Whether ``backup`` really held ``minion_id``: the master assigned it
    there once (its own record, fleet.assigned_ever), or the server's own
    records say it pushed to ``where`` (its host:port)."""
    if opts.get("cachedir") and backup in snap_fleet.assigned_ever(opts["cachedir"], minion_id):
        return True
    return where is not None and where in pushed


def endpoint(backup, pillar):
    """``host:port`` the servers push to for ``backup`` (what their push
    records name), from ``snap:backup_servers`` in the master's pillar."""
    entry = ((pillar.get("snap") or {}).get("backup_servers") or {}).get(backup)
    if not isinstance(entry, dict):
        entry = {str(k): v for k, v in ((pillar.get("snap") or {}).get("backup_servers") or {}).items()}.get(backup)
    if not isinstance(entry, dict):
        return None
    return f"{entry.get('host') or backup}:{entry.get('port') or 22}"


def status_all(salt_, opts, backups, now=None, timeout=15, offsite=None):
    """The fleet-wide table over ``backups`` (``fleetstatus.merge``): each
    backup server judges the servers assigned to it, its archive is checked
    against its own off-site prefix. A backup server that does not answer,
    or answers something malformed, gets an archive row saying so and makes
    the view not OK, and so does every server no answering backup server
    judged. Another backup server's claim to hold a server's older history
    is shown as confirmed only when the server's own records say it pushed
    there."""
    accepted = accepted_minions(opts)
    tables, held, pushed, endpoints, excluded, pillars = {}, {}, {}, {}, set(), {}
    for backup in backups:
        pillar = pillars[backup] = salt_["pillar.show_pillar"](minion=backup) or {}
        endpoints[backup] = endpoint(backup, pillar)
        excluded |= status_policy(pillar)["exclude"]
        try:
            prefix = archive_prefix(backup, pillar)
            table = status_one(salt_, opts, backup, now, timeout, offsite, prefix, accepted, pillar)
        except Exception as exc:  # one backup server's answer never takes the others' view down
            log.warning("snap status: the answer of %s could not be judged: %s", backup, exc)
            table = {"error": f"the answer of backup server {backup} could not be judged: {exc}"}
        if "error" in table:
            table = {"servers": [], "archive": {"archive_state": "NO ANSWER", "error": table["error"]}, "ok": False}
        else:
            # Only the backup server a server is assigned to judges it: rows
            # another one adds for it (from its own view) are dropped.
            own = set(servers_of(backup, pillar, [m for m in accepted if m != backup]))
            others = [r for r in table["servers"] if r["server"] not in accepted and valid_id(r["server"])]
            table["servers"] = [r for r in table["servers"] if r["server"] in own] + others[:MAX_UNKNOWN_ROWS]
            if len(others) > MAX_UNKNOWN_ROWS:
                table["ok"] = False
                table["archive"]["note"] = (
                    f"{len(others)} rows for ids the master does not know; shown: {MAX_UNKNOWN_ROWS}"
                )
        held[backup] = table.pop("history_only", {})
        pushed.update(table.pop("_pushed_to", {}))
        tables[backup] = table
    # A claim of older history stands when the server's own records name that backup server.
    claims = {}
    for backup, servers in held.items():
        claims[backup] = {
            m: (
                synced
                if confirmed(opts, m, backup, endpoints.get(backup), pushed.get(m, ()))
                else f"{synced}, its word only"
            )
            for m, synced in servers.items()
        }
    merged = fleetstatus.merge(tables, claims)
    judged = {r["server"] for r in merged["servers"] if r.get("backup_server") not in (None, "-")}
    for m in sorted(set(accepted) - set(backups) - excluded - judged):
        # Its "history only" row (older history elsewhere) is no proof it left the fleet.
        older = [r for r in merged["servers"] if r["server"] == m]
        merged["servers"] = [r for r in merged["servers"] if r["server"] != m]
        merged["servers"].append({"server": m, "backup_server": "-", "state": "NOT JUDGED", "schedule": "-",
                                  "last_good_push": "-", "age": "-", "missed_slots": 0,
                                  "older_history": ", ".join(r["older_history"] for r in older if r["older_history"]),
                                  "note": "no backup server that answered judges it"})  # fmt: skip
        merged["ok"] = False
    # Two backup servers archiving under one prefix would pass each other's archives off as their own.
    prefixes = {}
    for backup in backups:
        prefixes.setdefault(archive_prefix(backup, pillars[backup]), []).append(backup)
    shared = {p: b for p, b in prefixes.items() if len(b) > 1}
    if shared:
        merged["ok"] = False
        merged["note"] = "; ".join(
            f"backup servers {', '.join(b)} archive under one prefix {p} (pillar snap:archive:prefix): "
            "give each its own or leave it unset"
            for p, b in sorted(shared.items())
        )
    merged["servers"].sort(key=lambda r: (r["server"], r["backup_server"]))
    return merged
