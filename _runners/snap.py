"""
snap runners: the fleet as the master sees it.

.. code-block:: bash

    salt-run snap.fleet
"""

import copy
import logging

import salt.exceptions
import salt.utils.dictupdate
from salt.exceptions import SaltInvocationError

# The snap core API these modules are written against (snap_core.api).
NEEDS_CORE_API = (2, 5)

try:
    from snap_core import chains as snap_chains
    from snap_core import fleet as snap_fleet
    from snap_core import provision as snap_provision
    from snap_core import run_status as snap_run_status
    from snap_core.api import incompatible

    HAS_CORE = True
    IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover
    HAS_CORE = False
    IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "snap"

# salt-run snap.status prints a table unless told otherwise (--out=json ...).
__outputter__ = {"status": "table"}


def __virtual__():
    if not HAS_CORE:
        return (
            False,
            "snap runner: the snap_core package is not importable by the master's Python "
            f"({IMPORT_ERROR}); install or upgrade the snap wheel on the master",
        )
    stale = incompatible(NEEDS_CORE_API, __file__, "snap runner")
    if stale:
        return (False, stale)
    return __virtualname__


def fleet(tgt="*", tgt_type="glob"):
    """
    Every server's backup schedule, key and backup server, read back
    through the master.

    Keys come from the mine (``snap.pubkey``) and are validated again here;
    schedules and the backup server each server is assigned to
    (``backup_server``) come from each minion's pillar as the master
    compiles it. ``account`` is the name the fleet's naming rule gives;
    ``account_published`` the name that backup server publishes for it
    (``snap.accounts`` in the mine: what the server pushes as; its word,
    whether or not the account is complete yet; ``salt-run snap.status``
    says whether pushes land), or None before it has.
    Servers whose key was rejected are listed with the reason.

    CLI Example:

    .. code-block:: bash

        salt-run snap.fleet
        salt-run snap.fleet 'web*'
    """
    mine = __salt__["mine.get"](tgt, snap_fleet.MINE_FUNCTION, tgt_type=tgt_type)
    checked = snap_fleet.validate_mine(mine)
    ids = sorted(set(mine) | set(checked["rejected"]))
    snaps = {m: (__salt__["pillar.show_pillar"](minion=m) or {}).get("snap") or {} for m in ids}
    backups = {m: (s.get("backup_server") or {}).get("minion_id") for m, s in snaps.items()}
    # Only the backup servers' publications: any minion can publish its own.
    named = sorted({b for b in backups.values() if isinstance(b, str)})
    published = __salt__["mine.get"](named, "snap.accounts", tgt_type="list") if named else {}
    report = {}
    for minion_id in ids:
        sched = snaps[minion_id].get("schedule") or {}
        backup = backups[minion_id]
        names = published.get(backup) if isinstance(backup, str) else None
        name = names.get(minion_id) if isinstance(names, dict) else None
        row = {
            "minute": sched.get("minute"),
            "hours": sched.get("hours"),
            "backup_server": backup,
            "account_published": name if isinstance(name, str) else None,
        }
        key = checked["accepted"].get(minion_id)
        if key:
            row.update(fingerprint=key["fingerprint"], account=key["account"], key="ok")
        else:
            row.update(key="rejected: " + checked["rejected"].get(minion_id, "no mine data"))
        report[minion_id] = row
    return report


def _backup_servers():
    """Every backup server, by the master's word: the minions listed in
    ``snap:backup_servers`` of the pillars compiled here, and (one backup
    server) the minion that publishes snap.hostkey in the mine; each kept
    only if its own pillar names it ``snap:backup_server:minion_id``. The
    mine is a minion's own word: a backup server that deletes its entry
    still counts (and, not answering, fails the views), and any client
    minion can publish a host key (a compromised one would) without
    becoming one."""
    published = sorted(snap_run_status.again("reading the mine", __salt__["mine.get"], "*", "snap.hostkey"))
    candidates = set(published)
    for m in published:
        snap = (__salt__["pillar.show_pillar"](minion=m) or {}).get("snap") or {}
        listed = snap.get("backup_servers")
        if isinstance(listed, dict):
            candidates.update(str(b) for b in listed)
    servers = [
        m
        for m in sorted(candidates)
        if (((__salt__["pillar.show_pillar"](minion=m) or {}).get("snap") or {}).get("backup_server") or {}).get(
            "minion_id"
        )
        == m
    ]
    if not servers:
        raise salt.exceptions.SaltInvocationError(
            f"cannot tell the backup server: snap.hostkey is published by {published or 'no minion'}, and "
            "none of them is named snap:backup_server:minion_id by its own pillar; pass tgt=<its minion id>"
        )
    return servers


def _backup_server_of(server, backup=None, unconfirmed=False):
    """The backup server that holds ``server``'s history: the one the
    server's pillar names (the ext_pillar's assignment), or ``backup`` (the
    old one, for history from before a move). Another than the assigned one
    must be named by the server's own push records (it pushed there), else
    its history there is that backup server's word only and is refused
    unless ``unconfirmed``."""
    servers = _backup_servers()
    snap = (__salt__["pillar.show_pillar"](minion=server) or {}).get("snap") or {}
    assigned = (snap.get("backup_server") or {}).get("minion_id")
    if not assigned and len(servers) == 1:
        assigned = servers[0]
    backup = backup or assigned
    if backup not in servers:
        raise salt.exceptions.SaltInvocationError(
            f"{backup!r} is not a backup server (backup servers: {', '.join(servers)}); "
            f"pass backup=<the backup server that holds {server}'s history>"
        )
    if backup != assigned and not unconfirmed:
        pillar = __salt__["pillar.show_pillar"](minion=backup) or {}
        where = snap_run_status.endpoint(backup, pillar)
        records = client_cmd_quiet(server, "snap.push_history")
        if not isinstance(records, list):
            records = __salt__["mine.get"](server, "snap.push_history").get(server)
        pushed = snap_run_status.pushed_to(records if isinstance(records, list) else [])
        if not snap_run_status.confirmed(__opts__, server, backup, where, pushed):
            raise salt.exceptions.SaltInvocationError(
                f"{server} was never assigned to {backup} (the master's record) and its own push records do not "
                f"name {backup} ({where}): what {backup} holds of it is {backup}'s word only; pass "
                "unconfirmed=True to restore from it anyway"
            )
    return backup


def archive(tgt=None, timeout=86400):
    """
    Run the archive pipeline on the backup server and return its manifest:
    the history packed (SquashFS), encrypted to the offline OpenPGP public
    key(s), uploaded off-site under Object Lock COMPLIANCE. With chains
    (``snap:archive:chain:enabled``, on by default for an S3 target) the
    run uploads only what is new and returns its link's manifest as
    ``chain`` (``manifest`` is then None).

    tgt
        One backup server's minion id. Default: every backup server, each
        archiving its own history to its own prefix at the same time; with
        several, ``backup_servers`` holds each one's result and the run
        fails if any failed.

    CLI Example:

    .. code-block:: bash

        salt-run snap.archive
        salt-run snap.archive tgt=backup1
    """
    import salt.client

    backups = [tgt] if tgt else _backup_servers()
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        ret = client.cmd(backups, "snap.archive", tgt_type="list", timeout=timeout, full_return=True)
    if len(backups) == 1:
        return _archive_result(backups[0], ret)
    each = {b: _archive_result(b, ret) for b in backups}
    failed = sorted(b for b, out in each.items() if not out.get("result"))
    return {"result": not failed, "failed": failed, "backup_servers": each, "retcode": 1 if failed else 0}


def _archive_result(backup, ret):
    """One backup server's archive answer, shaped for the runner's return."""
    if backup not in ret:
        return {"result": False, "error": f"backup server {backup} did not answer", "retcode": 1}
    answer = ret[backup]
    if answer.get("retcode", 0) != 0 or not isinstance(answer.get("ret"), dict):
        return {"result": False, "error": answer.get("ret"), "retcode": 1}
    record = answer["ret"]
    if not isinstance(record.get("manifest_key"), str):
        return {"result": False, "error": f"backup server {backup} answered no manifest key: {record!r:.300}",
                "retcode": 1}  # fmt: skip
    out = {"result": True, "manifest_key": record["manifest_key"], "manifest": record.get("manifest"), "retcode": 0}
    # A chain run: its link's manifest (the whole chain it needs) and what is held under lock.
    for extra in ("chain", "storage"):
        if record.get(extra):
            out[extra] = record[extra]
    return out


def _servers_of(tgt, pillar, minions):
    """The servers assigned to backup server ``tgt`` (``run_status.servers_of``)."""
    return snap_run_status.servers_of(tgt, pillar, minions)


def status(now=None, tgt=None, timeout=15, offsite=None):
    """
    The fleet's backup status: for every server the master knows, its
    schedule, last complete push, age, missed slots and state (OK / LATE /
    MISSING / FAILED / NEVER / SUSPECT), and the last archive with its
    retain-until. Servers that never pushed show up. The return code is
    non-zero when anything is not OK, so cron or a monitor can use it
    directly. Table output by default; ``--out=json`` or ``--out=yaml`` for
    machines.

    The backup server's receipts give the verdict; two sources it cannot
    touch check them: each server's own push records (asked directly, else
    from the mine) and the off-site listing, read with the read-only identity
    of the drill minion. Any disagreement makes the server or the archive
    SUSPECT, fires ``snap/status/suspect`` on the master's event bus (the
    example reactor alerts on it) and is named in the note.

    now
        Judge as of this time (unix seconds); default: now.

    tgt
        One backup server's minion id. Default: every backup server (the
        minions that publish ``snap.hostkey`` in the mine and that their own
        pillar names as the backup server); with several, one table over all
        of them: each server as the backup server it is assigned to judges
        it (column ``backup_server``), ``older_history`` where history from
        before it moved still lives, and one archive row per backup server,
        each checked against its own off-site prefix.

    offsite
        The minion that lists off-site (default: pillar ``snap:verify:minion``
        of the backup server); ``offsite=False`` skips that source.

    CLI Example:

    .. code-block:: bash

        salt-run snap.status
        salt-run snap.status --out=json
        salt-run snap.status offsite=drill1
    """
    with snap_run_status.no_collection_midway():
        table = _status(now, tgt, timeout, offsite)
    if "error" in table:
        return table
    # salt-run exits with the "retcode" of the returned mapping.
    table["retcode"] = 0 if table["ok"] else 1
    return table


def _status(now, tgt, timeout, offsite):
    """The table of ``status``, or its error with return code 2."""
    try:
        backups = [tgt] if tgt else _backup_servers()
    except salt.exceptions.SaltException as exc:  # a master too busy to answer, after asking again
        return {"error": f"the backup servers could not be found: {exc}", "retcode": 2}
    if len(backups) == 1:
        # Its own prefix only: a listing of every backup server's archives
        # would let this one pass another's archive off as its own.
        pillar = __salt__["pillar.show_pillar"](minion=backups[0]) or {}
        prefix = snap_run_status.archive_prefix(backups[0], pillar)
        try:
            table = snap_run_status.status_one(__salt__, __opts__, backups[0], now, timeout, offsite, prefix,
                                               pillar=pillar)  # fmt: skip
        except salt.exceptions.SaltException as exc:
            return {"error": f"the status of backup server {backups[0]} could not be asked: {exc}", "retcode": 2}
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            return {"error": f"the answer of backup server {backups[0]} could not be judged: {exc}", "retcode": 2}
        table.pop("_pushed_to", None)
    else:
        table = snap_run_status.status_all(__salt__, __opts__, backups, now, timeout, offsite)
    return table


def alert(tag, data=None):
    """
    Run the alert command (master option ``snap_alert_command``, a shell
    command) with the event as JSON on its stdin and ``SNAP_EVENT_TAG`` in
    its environment. Meant for the example reactor
    ``salt://reactor/snap-alert.sls``.

    CLI Example:

    .. code-block:: bash

        salt-run snap.alert snap/test '{"message": "hello"}'
    """
    import json
    import os
    import subprocess

    command = __opts__.get("snap_alert_command")
    if not command:
        log.warning("snap alert %s: no snap_alert_command in the master config; event: %s", tag, data)
        return {"sent": False, "reason": "no snap_alert_command configured"}
    env = dict(os.environ, SNAP_EVENT_TAG=str(tag))
    proc = subprocess.run(
        command, shell=True, input=json.dumps({"tag": tag, "data": data}, default=str),
        text=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        __context__["retcode"] = 1
        log.error("snap alert command failed (%s): %s", proc.returncode, proc.stderr)
    return {"sent": proc.returncode == 0, "returncode": proc.returncode}


# -- off-site provisioning (administrator identity, on the master) ----------------


def _offsite_settings(minion=None, pillar=None):
    """``snap:offsite`` as ``minion`` (default: the master's own id) sees it,
    with ``pillar`` (a dict, like ``pillar=`` on the CLI) merged over it."""
    if not HAS_CORE:
        raise SaltInvocationError(f"snap_core.provision is not importable on the master: {IMPORT_ERROR}")
    settings, archive, where = {}, None, f"the pillar of {minion}" if minion else "the master's pillar"
    if pillar is None or minion is not None:
        compiled = __salt__["pillar.show_pillar"](minion=minion) if minion else __salt__["pillar.show_pillar"]()
        snap = (compiled or {}).get("snap") or {}
        settings = dict(snap.get("offsite") or {})
        # The cap on retention leaves room for incremental chains (docs/OFFSITE.md).
        archive = snap.get("archive")
        # Read only from a mapping: a malformed one is refused below, naming it.
        chain = (archive.get("chain") if isinstance(archive, dict) else None) or {}
        if isinstance(chain, dict) and chain.get("max_age_days") is not None and settings:
            settings.setdefault("chain_max_age_days", chain["max_age_days"])
    if pillar:
        if not isinstance(pillar, dict):
            raise SaltInvocationError("pillar= must be a dict")
        override = (pillar.get("snap") or {}).get("offsite", pillar)
        settings.update(override)
        if (pillar.get("snap") or {}).get("archive") is not None:
            # Merged over the minion's, as pillar= is everywhere.
            archive = salt.utils.dictupdate.merge(copy.deepcopy(archive or {}), pillar["snap"]["archive"])
            where = "pillar= and " + where if minion else "pillar="
    if not settings:
        raise SaltInvocationError(
            "no snap:offsite settings in pillar"
            + (f" of minion {minion}" if minion else " of the master (pass minion=<backup server id>)")
        )
    # Ceph keeps only the bucket's default lock on multipart uploads: with
    # chains, that default must cover a chain's whole life, and the cap on
    # retention must leave them room. Chains are on unless pillar turns them
    # off or the target is a Glacier vault, as the archive run decides.
    try:
        notes = snap_chains.provisioning_chains(settings, archive, where)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None
    return settings, notes


def _with_notes(out, notes):
    if notes and isinstance(out, dict):
        out["notes"] = list(out.get("notes") or []) + notes
    return out


def provision(minion=None, test=False, dry_run=False, pillar=None):
    """
    Create or check the off-site storage that pillar ``snap:offsite``
    describes: the bucket (versioning, Object Lock with a COMPLIANCE default
    retention of ``retain_days`` >= 90, public access blocked, encryption at
    rest, lifecycle to ``storage_class``, a bucket policy denying every
    destructive or reconfiguring call to all but ``admins``) or, for kind
    ``glacier``, an existing vault's access policy and optional vault lock;
    and the backup server's put-only identity (IAM user or role).

    Runs with the master's AWS credentials (``admin_profile`` picks a
    profile); they must belong to one of ``admins``. Nothing irreversible
    happens without ``snap:offsite:confirm_irreversible`` set to
    ``I understand COMPLIANCE cannot be undone``. A lock or policy is never
    weakened: such a step is refused with the reason, and then nothing at all
    is applied. A second run changes nothing and says so.

    minion
        Whose pillar to read ``snap:offsite`` from: the backup server's id,
        since the upload pipeline reads the same settings there. Default: the
        master's own pillar.

    test / dry_run
        Show the plan, with the exact JSON of every document, and change nothing.

    pillar
        A dict merged over the pillar settings (``{"snap": {"offsite": {...}}}``
        or the ``offsite`` mapping itself).

    CLI Example:

    .. code-block:: bash

        salt-run snap.provision minion=backup1 test=True
        salt-run snap.provision minion=backup1
        salt-run snap.provision pillar='{"bucket": "acme-snap", "retain_days": 120}' dry_run=True
    """
    settings, notes = _offsite_settings(minion, pillar)
    try:
        return _with_notes(snap_provision.provision(settings, test=bool(test or dry_run), log=log.info), notes)
    except snap_provision.ProvisionError as exc:
        return {"result": False, "comment": str(exc), "changes": {}}


def verify_offsite(minion=None, pillar=None):
    """
    Read the off-site configuration back and report every drift from the
    policy: versioning, Object Lock and its default retention, public access
    block, encryption, lifecycle, the bucket (or vault) policy, and the
    backup identity's policies, plus a static proof that the policies read
    back still refuse every forbidden call. ``ok`` is False on any drift.

    CLI Example:

    .. code-block:: bash

        salt-run snap.verify_offsite minion=backup1
    """
    settings, notes = _offsite_settings(minion, pillar)
    try:
        return _with_notes(snap_provision.verify(settings), notes)
    except snap_provision.ProvisionError as exc:
        return {"ok": False, "drift": [str(exc)], "checks": []}


def provision_template(path, minion=None, pillar=None):
    """
    Write the documents ``snap.provision`` applies as JSON files into the
    directory ``path`` on the master: the bucket policy, the identity (and
    trust) policy, the lock, encryption and lifecycle configurations, a
    CloudFormation template with all of it (kind s3), or the vault access and
    lock policies (kind glacier), for people who provision outside Salt.
    ``snap:offsite:admins`` must be set (and ``account_id`` for vaults).

    CLI Example:

    .. code-block:: bash

        salt-run snap.provision_template /srv/snap/offsite-template minion=backup1
    """
    settings, notes = _offsite_settings(minion, pillar)
    return _with_notes({"written": snap_provision.template(settings, path)}, notes)


# -- restore and proof -------------------------------------------------------------------


def client_cmd_quiet(tgt, fun, arg=(), timeout=60):
    """One call to one minion whose failure is logged, not raised: its return or the error."""
    import salt.client

    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        ret = client.cmd(tgt, fun, arg=list(arg), timeout=timeout)
    return ret.get(tgt, f"{tgt} did not answer")


def _one(client, tgt, fun, arg=(), kwarg=None, timeout=3600):
    """Run one function on one minion; its return, or an error naming both."""
    ret = client.cmd(tgt, fun, arg=list(arg), kwarg=kwarg or {}, timeout=timeout, full_return=True)
    if tgt not in ret:
        raise salt.exceptions.CommandExecutionError(f"{tgt} did not answer {fun}")
    answer = ret[tgt]
    if answer.get("retcode", 0) != 0:
        raise salt.exceptions.CommandExecutionError(f"{tgt}: {fun} failed: {answer.get('ret')}")
    return answer.get("ret")


def restore(tgt, path="/", server=None, snapshot=None, to="/", overwrite=False, special=False, chunk_size=512 << 10,
            timeout=3600, backup=None, unconfirmed=False):  # fmt: skip
    """
    Put a file, a directory or a whole server (``path=/``) from the backup
    server's history back onto the server ``tgt`` (or into the directory
    ``to`` on it), through Salt's own channel:

    1. the backup server packs the pick and seals it to ``tgt``'s own snap
       SSH key from the mine (so only ``tgt`` can open it);
    2. this runner moves it in 512 KiB chunks (below the master event bus limit, max_event_size): returns from the backup server,
       publishes to ``tgt`` (size limit: pillar ``snap:restore:max_bytes``,
       256 MiB by default);
    3. ``tgt`` checks the sha256, opens it with its key and extracts it with
       the owners, modes, devices, ACLs and xattrs it had — where ``server``
       and ``path`` say, which this runner hands to ``tgt`` itself: the
       backup server's description of the pick is checked against them,
       never trusted (a compromised backup server cannot place files
       outside ``path``, restore a whole server unless ``/`` was asked, or
       make ``tgt`` follow a symlink out of the destination).

    The backup server never gets a login or a key on the server. Existing
    files are replaced only with ``overwrite=True``; otherwise any conflict
    fails the restore before anything moves.

    server
        Whose data (default: ``tgt`` itself).

    backup
        The backup server to take it from (default: the one ``server`` is
        assigned to; history from before a move stays on the old one, which
        ``salt-run snap.status`` names under ``older_history``). Another
        than the assigned one must be named by ``server``'s own push records
        (it pushed there), else ``unconfirmed=True`` is needed: what a
        backup server says it holds of a server is otherwise its word only.

    special
        Allow device nodes, set-uid/set-gid files and file capabilities in
        the pick (always allowed for ``/``). Without it they are refused:
        planted in ``/etc/nginx`` they would be a way to root.

    CLI Example:

    .. code-block:: bash

        salt-run snap.restore db1 /etc/nginx
        salt-run snap.restore db1 / to=/srv/restored snapshot=daily.1
        salt-run snap.restore db2 /srv/data server=db1 to=/srv/from-db1
        salt-run snap.restore web1 /etc backup=backup1 snapshot=weekly.3
    """
    import salt.client

    server = server or tgt
    backup = _backup_server_of(server, backup, unconfirmed)
    chunk_size = int(chunk_size)
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        packed = _one(client, backup, "snap.restore_pack", [server],
                      {"path": path, "snapshot": snapshot, "recipient": tgt}, timeout)  # fmt: skip
        transfer = packed["transfer"]
        try:
            offset = 0
            while offset < packed["size"]:
                data = _one(client, backup, "snap.restore_chunk", [transfer, offset, chunk_size], timeout=timeout)
                have = _one(client, tgt, "snap.restore_receive", [transfer, offset, data], timeout=timeout)
                if have <= offset:
                    raise salt.exceptions.CommandExecutionError(f"{tgt} did not take the chunk at {offset}")
                offset = have
            # What was asked goes to tgt from here, not through the backup server.
            asked = {"server": server, "path": path, "to": to, "overwrite": overwrite, "special": bool(special)}
            result = _one(client, tgt, "snap.restore_apply", [transfer, packed["packed"], packed["sha256"]],
                          asked, timeout)  # fmt: skip
        except Exception:
            try:
                client.cmd(tgt, "snap.restore_discard", arg=[transfer], timeout=60)
            except Exception:  # pragma: no cover - best effort
                pass
            raise
        finally:
            client.cmd(backup, "snap.restore_discard", arg=[transfer], timeout=60)
    return {
        "result": True,
        "server": server,
        "snapshot": packed["snapshot"],
        "path": path,
        "onto": tgt,
        "to": to,
        "sealed_to": packed["fingerprint"],
        "bytes_moved": packed["size"],
        "files": result["files"],
        "entries": result,
        "retcode": 0,
    }


def verify(tgt=None, random_files=50, max_bytes=None, audit_only=False, timeout=86400, backup=None):
    """
    Prove the archives: on the drill minion ``tgt`` (pillar
    ``snap:verify:minion`` of the backup server by default), the off-site
    audit (every archive's lock mode and retain-until, the newest archive's
    age) and the restore drill: the backup server picks a sample of its
    history for the newest archive (random files plus one whole server,
    size-capped; paths and hashes only), the drill minion restores it from
    off-site with the drill key it holds and compares. The drill key never
    touches the backup server, the archive key is not used at all. The
    record is kept on the drill minion (verify-last.json, verify.jsonl).

    backup
        One backup server's archives. Default: every backup server's, each
        under its own prefix, one after the other; with several,
        ``backup_servers`` holds each one's result and the run fails if any
        failed.

    CLI Example:

    .. code-block:: bash

        salt-run snap.verify
        salt-run snap.verify tgt=drill1 audit_only=True
        salt-run snap.verify backup=backup2
    """
    backups = [backup] if backup else _backup_servers()
    each = {}
    for b in backups:
        # Each backup server's archives under its own prefix only.
        pillar = __salt__["pillar.show_pillar"](minion=b) or {}
        prefix = snap_run_status.archive_prefix(b, pillar)
        if len(backups) == 1:
            return _verify_one(b, tgt, random_files, max_bytes, audit_only, timeout, prefix)
        try:
            each[b] = _verify_one(b, tgt, random_files, max_bytes, audit_only, timeout, prefix)
        except Exception as exc:  # one backup server's failure never skips the others
            each[b] = {"summary": {"result": "failed"}, "error": str(exc), "retcode": 1}
    failed = sorted(b for b, out in each.items() if out.get("retcode"))
    return {"failed": failed, "backup_servers": each, "retcode": 1 if failed else 0}


def _verify_one(backup, tgt, random_files, max_bytes, audit_only, timeout, prefix=None):
    """``verify`` of one backup server's archives (``prefix``: theirs, when
    the drill minion's own configured prefix is not the one)."""
    import salt.client

    if not tgt:
        pillar = __salt__["pillar.show_pillar"](minion=backup) or {}
        tgt = ((pillar.get("snap") or {}).get("verify") or {}).get("minion")
    if not tgt:
        raise salt.exceptions.SaltInvocationError(
            "which minion holds the drill key? pass tgt=<id> or set pillar snap:verify:minion"
        )
    if tgt == backup and not audit_only:
        raise salt.exceptions.SaltInvocationError(
            f"{tgt} is the backup server: the drill key must live elsewhere (see docs/RESTORE.md)"
        )
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        sample = None
        if not audit_only:
            kwarg = {"random_files": random_files}
            if max_bytes:
                kwarg["max_bytes"] = max_bytes
            sample = _one(client, backup, "snap.drill_sample", kwarg=kwarg, timeout=timeout)
        kwarg = {"sample": sample, **({"prefix": prefix} if prefix else {})}
        ret = client.cmd(tgt, "snap.verify", kwarg=kwarg, timeout=timeout, full_return=True)
    if tgt not in ret or not isinstance(ret[tgt].get("ret"), dict):
        return {"result": "failed", "error": (ret.get(tgt) or {}).get("ret") or f"{tgt} did not answer", "retcode": 1}
    rec = ret[tgt]["ret"]
    # The backup server keeps a copy for its metrics (snap_drill_last_success):
    # the record holds results and hashes, no key and no secret.
    kept = client_cmd_quiet(backup, "snap.keep_verify_record", [rec])
    if kept is not True:
        log.warning("snap verify: %s did not keep the verify record: %s", backup, kept)
    from snap_core import restore_cli

    # salt-run exits with the "retcode" of the returned mapping.
    return {"summary": restore_cli.verify_summary(rec), "record": rec, "drill_minion": tgt,
            "retcode": 1 if rec["result"] == "failed" else 0}  # fmt: skip
