"""
Runner functions for off-site provisioning, to be merged into ``_runners/snap.py``.

Written as if they were in the ``snap`` runner module: at merge, paste the
imports below next to snap.py's (inside its ``try: ... HAS_CORE`` block for
``snap_core.provision``) and the functions after ``fleet``. Until then this
file loads on its own as the runner module ``snap_provision_part`` (the tests
call it that way through Salt's loader).

They run on the master with the master's AWS identity, which must be an
administrator of the off-site account: never the backup server's.

.. code-block:: bash

    salt-run snap.provision minion=backup1 test=True
    salt-run snap.provision minion=backup1
    salt-run snap.verify_offsite minion=backup1
    salt-run snap.provision_template /srv/snap/offsite-template minion=backup1
"""

import logging

from salt.exceptions import SaltInvocationError

try:
    from snap_core import provision as snap_provision

    HAS_PROVISION = True
    PROVISION_IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover
    HAS_PROVISION = False
    PROVISION_IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)


def _offsite_settings(minion=None, pillar=None):
    """``snap:offsite`` as ``minion`` (default: the master's own id) sees it,
    with ``pillar`` (a dict, like ``pillar=`` on the CLI) merged over it."""
    if not HAS_PROVISION:
        raise SaltInvocationError(f"snap_core.provision is not importable on the master: {PROVISION_IMPORT_ERROR}")
    settings = {}
    if pillar is None or minion is not None:
        compiled = __salt__["pillar.show_pillar"](minion=minion) if minion else __salt__["pillar.show_pillar"]()
        settings = dict(((compiled or {}).get("snap") or {}).get("offsite") or {})
    if pillar:
        if not isinstance(pillar, dict):
            raise SaltInvocationError("pillar= must be a dict")
        override = (pillar.get("snap") or {}).get("offsite", pillar)
        settings.update(override)
    if not settings:
        raise SaltInvocationError(
            "no snap:offsite settings in pillar"
            + (f" of minion {minion}" if minion else " of the master (pass minion=<backup server id>)")
        )
    return settings


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
    settings = _offsite_settings(minion, pillar)
    try:
        return snap_provision.provision(settings, test=bool(test or dry_run), log=log.info)
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
    settings = _offsite_settings(minion, pillar)
    try:
        return snap_provision.verify(settings)
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
    settings = _offsite_settings(minion, pillar)
    return {"written": snap_provision.template(settings, path)}
