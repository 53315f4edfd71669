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
