"""
snap: fleet backups that survive a compromised host or backup server.

Execution module. It stays thin: it validates arguments, calls the Rust core
(the ``snap_core`` Python package, installed by state ``snap.core``) and shapes
Salt's return.

:depends: snap_core (the snap wheel, installed into the Python that runs Salt)

Configuration (pillar):

.. code-block:: yaml

    snap:
      client:
        key: /etc/snap/id_ed25519      # this server's snap SSH key (default: under root_dir)
    mine_functions:
      snap.pubkey: []
"""

import logging
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import snap_core
    from snap_core import fleet

    HAS_CORE = True
    IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - exercised by the core-missing test
    HAS_CORE = False
    IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "snap"


def __virtual__():
    if not HAS_CORE:
        return (
            False,
            "snap: the snap_core package is not importable by the Python that runs Salt "
            f"({IMPORT_ERROR}); apply state snap.core to install the snap wheel",
        )
    return __virtualname__


def _pillar(key, default=None):
    """``pillar.get`` with real values: Salt 3008 masks them unless ``unmask=True``."""
    try:
        return __salt__["pillar.get"](key, default, unmask=True)
    except TypeError:  # Salt before 3008 has no unmask and does not mask
        return __salt__["pillar.get"](key, default)


def _key_path(path=None):
    path = path or _pillar(
        "snap:client:key", fleet.default_key_path(__opts__.get("root_dir") or "/")
    )
    if not isinstance(path, str) or not os.path.isabs(path):
        raise SaltInvocationError(f"snap key path must be an absolute path, got {path!r}")
    return path


def _core(func, *args, **kwargs):
    """Call the core; turn its errors into CommandExecutionError with the same message."""
    try:
        return func(*args, **kwargs)
    except snap_core.Error as exc:
        raise CommandExecutionError(str(exc)) from exc


def version():
    """
    Return the version of the snap core installed on this minion.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.version
    """
    return snap_core.__version__


def pubkey(path=None):
    """
    Return this server's snap public key, validated, for the Salt mine.

    The returned mapping has ``id``, ``account``, ``line`` (``type base64``,
    no options, no comment), ``type``, ``fingerprint``, ``comment`` and
    ``bits``. Whoever reads it from the mine validates it again.

    path
        Private key path (default: pillar ``snap:client:key`` or
        ``/etc/snap/id_ed25519``); the public key is ``path + ".pub"``.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.pubkey
        salt '*' mine.get '*' snap.pubkey
    """
    return _core(fleet.mine_entry, __opts__["id"], _key_path(path))


def key_status(path=None):
    """
    Report the state of this server's snap key pair without changing anything.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.key_status
    """
    path = _key_path(path)
    pub = path + ".pub"
    status = {
        "path": path,
        "private": os.path.lexists(path),
        "public": os.path.lexists(pub),
        "private_mode": None,
        "fingerprint": None,
        "matches": None,
        "error": None,
    }
    if status["private"]:
        status["private_mode"] = "%04o" % (os.lstat(path).st_mode & 0o7777)
        try:
            derived = snap_core.public_from_private(path)
            status["fingerprint"] = derived["fingerprint"]
            if status["public"]:
                published = fleet.read_public_key(path)
                status["matches"] = published["key"] == derived["key"]
        except snap_core.Error as exc:
            status["error"] = str(exc)
    return status


def generate_keypair(path=None, comment=None):
    """
    Create this server's Ed25519 snap key pair; never overwrites an existing key.

    Returns the SHA256 fingerprint.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.generate_keypair
    """
    path = _key_path(path)
    comment = comment if comment is not None else f"snap@{__opts__['id']}"
    return _core(snap_core.generate_keypair, path, comment)


def restore_public(path=None):
    """
    Rewrite a lost ``.pub`` file from the private key; never overwrites.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.restore_public
    """
    return _core(snap_core.restore_public, _key_path(path))


def account_name(minion_id=None):
    """
    Return the backup server's account name for a minion id (default: this minion).

    CLI Example:

    .. code-block:: bash

        salt '*' snap.account_name
        salt-call snap.account_name web1.example.com
    """
    return _core(snap_core.account_name, minion_id or __opts__["id"])


def schedule():
    """
    Return this minion's backup schedule as the ext_pillar computed it.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.schedule
    """
    sched = _pillar("snap:schedule", {})
    if "minute" not in sched:
        raise CommandExecutionError(
            "pillar snap:schedule:minute is missing: enable the snap ext_pillar on the master "
            "(ext_pillar: [{snap: {}}]) and refresh pillar"
        )
    return sched


def fleet_keys(tgt="*", tgt_type="glob"):
    """
    Read every server's snap key from the mine and validate each again.

    Returns ``{"accepted": {id: key and account}, "rejected": {id: reason}}``.
    A minion whose key carries options, extra lines or anything but one bare
    key, or whose account name collides with another's, is rejected with the
    reason; the rest of the fleet is unaffected.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.fleet_keys
    """
    mine = __salt__["mine.get"](tgt, fleet.MINE_FUNCTION, tgt_type=tgt_type)
    overrides = _pillar("snap:server:account_overrides", {})
    result = _core(fleet.validate_mine, mine, overrides)
    for minion_id, reason in result["rejected"].items():
        log.error("snap: rejected mine key of %s: %s", minion_id, reason)
    return result
