"""
snap runners: the fleet as the master sees it.

.. code-block:: bash

    salt-run snap.fleet
"""

import logging

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
