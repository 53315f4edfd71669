"""
snap runners: the fleet as the master sees it.

.. code-block:: bash

    salt-run snap.fleet
"""

import logging

import salt.exceptions

try:
    from snap_core import fleet as snap_fleet

    HAS_CORE = True
    IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover
    HAS_CORE = False
    IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "snap"


def __virtual__():
    if not HAS_CORE:
        return (
            False,
            "snap runner: the snap_core package is not importable by the master's Python "
            f"({IMPORT_ERROR}); install the snap wheel on the master",
        )
    return __virtualname__


def fleet(tgt="*", tgt_type="glob"):
    """
    Every server's backup schedule and key, read back through the master.

    Keys come from the mine (``snap.pubkey``) and are validated again here;
    schedules come from each minion's pillar as the master compiles it.
    Servers whose key was rejected are listed with the reason.

    CLI Example:

    .. code-block:: bash

        salt-run snap.fleet
        salt-run snap.fleet 'web*'
    """
    mine = __salt__["mine.get"](tgt, snap_fleet.MINE_FUNCTION, tgt_type=tgt_type)
    checked = snap_fleet.validate_mine(mine)
    report = {}
    for minion_id in sorted(set(mine) | set(checked["rejected"])):
        pillar = __salt__["pillar.show_pillar"](minion=minion_id) or {}
        sched = (pillar.get("snap") or {}).get("schedule") or {}
        row = {
            "minute": sched.get("minute"),
            "hours": sched.get("hours"),
        }
        key = checked["accepted"].get(minion_id)
        if key:
            row.update(fingerprint=key["fingerprint"], account=key["account"], key="ok")
        else:
            row.update(key="rejected: " + checked["rejected"].get(minion_id, "no mine data"))
        report[minion_id] = row
    return report


def _backup_server():
    """The backup server: the one minion that publishes snap.hostkey in the mine."""
    servers = sorted(__salt__["mine.get"]("*", "snap.hostkey"))
    if len(servers) != 1:
        raise salt.exceptions.SaltInvocationError(
            f"cannot tell the backup server from the mine (snap.hostkey published by {servers or 'no minion'}): "
            "pass tgt=<its minion id>"
        )
    return servers[0]


def archive(tgt=None, timeout=86400):
    """
    Run the archive pipeline on the backup server and return its manifest:
    the history packed (SquashFS), encrypted to the offline OpenPGP public
    key(s), uploaded off-site under Object Lock COMPLIANCE.

    tgt
        The backup server's minion id (default: the minion that publishes
        ``snap.hostkey`` in the mine).

    CLI Example:

    .. code-block:: bash

        salt-run snap.archive
        salt-run snap.archive tgt=backup1
    """
    import salt.client

    tgt = tgt or _backup_server()
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        ret = client.cmd(tgt, "snap.archive", timeout=timeout, full_return=True)
    if tgt not in ret:
        raise salt.exceptions.CommandExecutionError(f"backup server {tgt} did not answer")
    answer = ret[tgt]
    if answer.get("retcode", 0) != 0 or not isinstance(answer.get("ret"), dict):
        __context__["retcode"] = 1
        return {"result": False, "error": answer.get("ret")}
    record = answer["ret"]
    return {"result": True, "manifest_key": record["manifest_key"], "manifest": record["manifest"]}


# Part of the `snap` runner (_runners/snap.py): restore and proof. Written as
# if inside that module (it uses _backup_server, log, salt.exceptions,
# __opts__, __salt__, __context__); the coordinator pastes these functions there.

# -- restore and proof -------------------------------------------------------------------


def _one(client, tgt, fun, arg=(), kwarg=None, timeout=3600):
    """Run one function on one minion; its return, or an error naming both."""
    ret = client.cmd(tgt, fun, arg=list(arg), kwarg=kwarg or {}, timeout=timeout, full_return=True)
    if tgt not in ret:
        raise salt.exceptions.CommandExecutionError(f"{tgt} did not answer {fun}")
    answer = ret[tgt]
    if answer.get("retcode", 0) != 0:
        raise salt.exceptions.CommandExecutionError(f"{tgt}: {fun} failed: {answer.get('ret')}")
    return answer.get("ret")


def restore(tgt, path="/", server=None, snapshot=None, to="/", overwrite=False, chunk_size=512 << 10, timeout=3600):
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
       the owners, modes, devices, ACLs and xattrs it had.

    The backup server never gets a login or a key on the server. Existing
    files are replaced only with ``overwrite=True``; otherwise any conflict
    fails the restore before anything moves.

    server
        Whose data (default: ``tgt`` itself).

    CLI Example:

    .. code-block:: bash

        salt-run snap.restore db1 /etc/nginx
        salt-run snap.restore db1 / to=/srv/restored snapshot=daily.1
        salt-run snap.restore db2 /srv/data server=db1 to=/srv/from-db1
    """
    import salt.client

    backup = _backup_server()
    server = server or tgt
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
            result = _one(client, tgt, "snap.restore_apply", [transfer, packed["packed"], packed["sha256"]],
                          {"to": to, "overwrite": overwrite}, timeout)  # fmt: skip
        except Exception:
            __context__["retcode"] = 1
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
    }


def verify(tgt=None, random_files=50, max_bytes=None, audit_only=False, timeout=86400):
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

    CLI Example:

    .. code-block:: bash

        salt-run snap.verify
        salt-run snap.verify tgt=drill1 audit_only=True
    """
    import salt.client

    backup = _backup_server()
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
        ret = client.cmd(tgt, "snap.verify", kwarg={"sample": sample}, timeout=timeout, full_return=True)
    if tgt not in ret or not isinstance(ret[tgt].get("ret"), dict):
        __context__["retcode"] = 1
        return {"result": "failed", "error": (ret.get(tgt) or {}).get("ret") or f"{tgt} did not answer"}
    rec = ret[tgt]["ret"]
    if rec["result"] == "failed":
        __context__["retcode"] = 1
    from snap_core import restore_cli

    return {"summary": restore_cli.verify_summary(rec), "record": rec, "drill_minion": tgt}
