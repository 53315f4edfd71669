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

import base64
import contextlib
import copy
import json
import logging
import os
import re
import shutil
import uuid

import salt.utils.dictupdate
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

# The snap core API these modules are written against (snap_core.api).
NEEDS_CORE_API = (2, 3)

try:
    import snap_core
    from snap_core import fleet
    from snap_core.api import incompatible

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
            f"({IMPORT_ERROR}); apply state snap.core to install or upgrade the snap wheel",
        )
    stale = incompatible(NEEDS_CORE_API, __file__, "snap execution module")
    if stale:
        return (False, stale)
    return __virtualname__


def _pillar(key, default=None):
    """``pillar.get`` with real values: Salt 3008 masks them unless ``unmask=True``."""
    try:
        return __salt__["pillar.get"](key, default, unmask=True)
    except TypeError:  # Salt before 3008 has no unmask and does not mask
        return __salt__["pillar.get"](key, default)


def settings():
    """
    Return snap's settings on this minion: ``salt://snap/defaults.yaml`` with
    pillar ``snap`` merged over it, and snap's own paths under this minion's
    ``root_dir`` (``/`` in production). ``snap/map.jinja`` applies the same rule.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.settings
    """
    if "snap.settings" not in __context__:
        text = __salt__["cp.get_file_str"]("salt://snap/defaults.yaml")
        if not text:
            raise CommandExecutionError("salt://snap/defaults.yaml is missing from the file roots")
        defaults = salt.utils.yaml.safe_load(text)
        merged = salt.utils.dictupdate.merge(
            copy.deepcopy(defaults), _pillar("snap", {}) or {}, strategy="recurse", merge_lists=False
        )
        root = __opts__.get("root_dir") or "/"
        for section, keys in defaults["root_relative"].items():
            for key in keys:
                if merged[section].get(key):
                    merged[section][key] = os.path.join(root, merged[section][key].lstrip("/"))
        bin_env = merged["core"].get("bin_env")
        merged["core"]["python"] = os.path.join(bin_env, "bin", "python") if bin_env else __grains__["pythonexecutable"]
        __context__["snap.settings"] = merged
    return copy.deepcopy(__context__["snap.settings"])


def _settings():
    """:func:`settings` without the copy, for read-only use inside this module
    (called once per account: a copy of the whole pillar each time adds up)."""
    if "snap.settings" not in __context__:
        settings()
    return __context__["snap.settings"]


def _key_path(path=None):
    path = path or settings()["client"]["key"]
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
    entry = _core(fleet.mine_entry, __opts__["id"], _key_path(path))
    sched = settings().get("schedule") or {}
    if "minute" in sched:
        # For salt-run snap.status: when this server is expected to push.
        entry["schedule"] = {k: sched[k] for k in ("minute", "second", "hours") if k in sched}
    return entry


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


def fleet_keys(tgt="*", tgt_type="glob", bound=None):
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
    result = _core(fleet.validate_mine, mine, overrides, bound)
    for minion_id, reason in result["rejected"].items():
        log.error("snap: rejected mine key of %s: %s", minion_id, reason)
    return result


# -- the backup server's host key, pinned by every client ----------------------


def hostkey(path=None):
    """
    Return the backup server's SSH host public key, validated, for the mine
    (``mine_functions: {snap.hostkey: []}`` on the backup server). Clients pin
    it in their known_hosts: no trust on first use.

    path
        Host public key (default: pillar ``snap:server:host_key``,
        ``/etc/ssh/ssh_host_ed25519_key.pub``).

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.hostkey
    """
    path = path or settings()["server"]["host_key"]
    if path.endswith(".pub"):
        path = path[: -len(".pub")]
    key = _core(fleet.read_public_key, path)
    return {"id": __opts__["id"], "line": f"{key['type']} {key['key']}", "fingerprint": key["fingerprint"]}


def known_hosts_lines():
    """
    The known_hosts lines a client pins for its backup server: the keys in
    pillar ``snap:backup_server:host_keys``, or else the one the backup server
    publishes through the mine (``snap.hostkey``), each validated again.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.known_hosts_lines
    """
    server = settings()["backup_server"]
    host, port = server["host"], int(server["port"])
    pinned = list(server.get("host_keys") or [])
    if not pinned:
        mine = __salt__["mine.get"](server["minion_id"], "snap.hostkey")
        entry = mine.get(server["minion_id"])
        if not isinstance(entry, dict) or not isinstance(entry.get("line"), str):
            raise CommandExecutionError(
                f"the host key of backup server {server['minion_id']} is unknown: highstate it first "
                "(it publishes snap.hostkey through the mine) or pin it in pillar snap:backup_server:host_keys"
            )
        pinned = [entry["line"]]
    name = host if port == 22 else f"[{host}]:{port}"
    lines = []
    for text in pinned:
        key = _core(snap_core.parse_public_key, text)
        lines.append(f"{name} {key['type']} {key['key']}")
    return lines


# -- servers: the push ----------------------------------------------------------


def client_config():
    """
    The push configuration of this server (what state ``snap.client_config``
    writes to ``/etc/snap/client.json``), checked by the core.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.client_config
    """
    s = settings()
    client, server = s["client"], s["backup_server"]
    sched = s.get("schedule") or {}
    config = {
        "minion_id": __opts__["id"],
        "server_host": server["host"],
        "server_port": int(server["port"]),
        "key": client["key"],
        "known_hosts": client["known_hosts"],
        "paths": list(client["paths"]),
        "excludes": list(client.get("excludes") or []),
        "hooks_dir": client["hooks_dir"],
        "state_dir": client["state_dir"],
        "splay": int(sched.get("second", 0)),
    }
    for key in ("hook_timeout", "nice", "ionice_class", "ionice_level", "retries", "retry_delay",
                "connect_timeout", "io_timeout", "bwlimit_kbps"):
        if client.get(key) is not None:
            config[key] = client[key]
    config["account"] = my_account()
    return _core(snap_core.parse_push_config, json.dumps(config))


def my_account():
    """
    This server's account on its backup server: pillar
    ``snap:server:account_overrides``, else what the backup server publishes
    through the mine (``snap.accounts``: names depend on the whole fleet, and
    an account keeps the name it was made with), else, before the backup
    server has published one, the name it would give a server whose first
    label nobody shares.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.my_account
    """
    me = __opts__["id"]
    s = _settings()
    overrides = s["server"].get("account_overrides") or {}
    if me in overrides:
        return overrides[me]
    server = s["backup_server"]["minion_id"]
    published = (__salt__["mine.get"](server, "snap.accounts") or {}).get(server)
    if isinstance(published, dict) and isinstance(published.get(me), str):
        return _core(snap_core.validate_account_name, published[me]) or published[me]
    return _core(snap_core.account_name, me)


def push(no_splay=True):
    """
    Push this server's data to the backup server now (cron runs the same with
    ``python -m snap_core push``). Returns the run's record.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.push
    """
    config = settings()["client"]["config"]

    def progress(event):
        log.info("snap push: %s", event["text"])

    rec = _core(snap_core.push_run, config, no_splay=no_splay, progress=progress)
    if rec["result"] not in ("ok", "partial"):
        __context__["retcode"] = 1
    return rec


# -- the backup server ------------------------------------------------------------


def _server_dirs(srv):
    """(jails, history) of the backup server: pillar, or under ``base``."""
    return (
        srv.get("jails_dir") or os.path.join(srv["base"], "jails"),
        srv.get("history_dir") or os.path.join(srv["base"], "history"),
    )


def server_config():
    """
    The backup server's configuration (what state ``snap.server_config``
    writes to ``/etc/snap/server.json``, which ``snap-receive`` and rotation
    read): every accepted server's account, the receiver's limits, the
    history reserve.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.server_config
    """
    srv = _settings()["server"]
    jails, history = _server_dirs(srv)
    accounts = complete_accounts()
    config = {
        "jails_dir": jails,
        "history_dir": history,
        "rsnapshot_conf": srv["rsnapshot_conf"],
        "as_account": srv["as_account"],
        "accounts": accounts,
        "levels": srv["levels"],
        "lock_wait": int(srv["lock_wait"]),
        "sync_timeout": int(srv["sync_timeout"]),
        "limits": srv["limits"],
        "reserve": srv["reserve"],
        "state_dir": srv["state_dir"],
        "log_file": os.path.join(srv["log_dir"], "rsnapshot.log"),
        "lock_file": os.path.join(srv["run_dir"], "rsnapshot.pid"),
    }
    return _core(snap_core.parse_server_config, json.dumps(config))


def _tables():
    """The user, group and shadow tables, read once per state run (snap_core.accounts)."""
    if "snap.tables" not in __context__:
        from snap_core import accounts

        __context__["snap.tables"] = accounts.Tables(_settings()["server"]["group"])
    return __context__["snap.tables"]


def server_settings():
    """
    The backup server's settings (``snap:server`` over the defaults), read-only.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.server_settings
    """
    return _settings()["server"]


def account_complete(minion_id):
    """
    Whether the push account of ``minion_id`` fully exists (see
    :func:`complete_accounts`).

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.account_complete web1.example.com
    """
    key = server_fleet()["accepted"].get(minion_id)
    return bool(key) and _complete(key["account"], minion_id)


def _complete(account, minion_id):
    tables = _tables()
    user = tables.users.get(account)
    jails = _server_dirs(_settings()["server"])[0]
    return (
        user is not None
        and user.bound_to == minion_id
        and tables.in_group(user)
        and os.path.isdir(os.path.join(jails, account, "incoming"))
    )


def complete_accounts():
    """
    ``{account: minion id}`` of the accepted servers whose account fully
    exists: the user, bound to that id, in the push group, and its jail.
    Only these go into ``server.json`` (and get an authorized key): a failure
    for one server never leaves half an account in use.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.complete_accounts
    """
    accepted = server_fleet()["accepted"]
    return {key["account"]: m for m, key in accepted.items() if _complete(key["account"], m)}


def push_account_info():
    """
    Every push account on this backup server (primary group or member of
    the push group): ``{account: {uid, home, shell, comment, expire}}``.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.push_account_info
    """
    return {
        u.name: {"uid": u.uid, "home": u.home, "shell": u.shell, "comment": u.gecos, "expire": u.expire}
        for u in _tables().push_accounts()
    }


def account_bindings():
    """
    The push accounts that exist on this backup server and the minion id
    each was made for (``{account: minion id}``, from the account's comment
    ``snap push account of <id>``, which only root can change). An account
    stays with its server: it is never handed to another id, even after its
    server left the fleet, until it is purged.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.account_bindings
    """
    return _tables().bindings()


def accounts():
    """
    The backup server's account of every server it keeps (``{minion id:
    account}``), for the mine (``mine_functions: {snap.accounts: []}`` on the
    backup server): each server reads its own account name from here.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.accounts
    """
    return {minion_id: key["account"] for minion_id, key in server_fleet()["accepted"].items()}


def ensure_account(minion_id):
    """
    Make or repair the push account of server ``minion_id`` (from the
    accepted fleet): one ``useradd`` (uid from pillar
    ``snap:server:uid_range``, the push group as its primary group, comment,
    home, shell, no password, no subordinate ids) or one ``usermod``, then its
    jail and quota. Returns ``{"account", "jail", "changes"}``; with
    ``test=True``, what would change. Raises CommandExecutionError naming the
    problem; nothing else in the fleet is touched.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.ensure_account web1.example.com
    """
    from snap_core import accounts as acc

    fleet = server_fleet()
    if minion_id in fleet["rejected"]:
        raise CommandExecutionError(
            f"{minion_id} gets no push account, its existing one (if any) is left as it was: "
            f"{fleet['rejected'][minion_id]}"
        )
    if minion_id not in fleet["accepted"]:
        raise CommandExecutionError(f"{minion_id} has published no snap key in the mine (snap.pubkey)")
    srv = _settings()["server"]
    account = fleet["accepted"][minion_id]["account"]
    jail = os.path.join(_server_dirs(srv)[0], account)
    tables = _tables()
    dry = bool(__opts__.get("test"))
    if dry and tables.gid is None:  # the group comes with this same run
        new = {"name": account, "group": srv["group"]}
        return {"account": account, "jail": jail, "changes": {"user": {"old": None, "new": new}}}
    try:
        uid_range = acc.parse_uid_range(srv.get("uid_range") or [200000, 299999])
        cmd, changes = acc.plan(tables, account, minion_id, jail, uid_range)
    except acc.AccountError as exc:
        raise CommandExecutionError(str(exc)) from None
    if cmd and not dry:
        res = __salt__["cmd.run_all"](cmd, python_shell=False, ignore_retcode=True)
        if res["retcode"]:
            raise CommandExecutionError(f"{cmd[0]} {account} failed: {res['stderr'] or res['stdout']}")
        acc.applied(tables, account, minion_id, jail, cmd)
    if dry and cmd and cmd[0] == "useradd":
        return {"account": account, "jail": jail, "changes": changes}
    jail_changes = prepare_jail(account, minion_id)
    if jail_changes:
        changes["jail"] = jail_changes
    changes.update(ensure_quota(account, minion_id))
    return {"account": account, "jail": jail, "changes": changes}


def write_root_file(path, text, mode="0644"):
    """
    Make ``path`` a root-owned file holding ``text`` (mode ``mode``), written
    atomically and only when it differs. Returns whether it changed (with
    ``test=True``, whether it would).

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.write_root_file /etc/snap/authorized_keys/snap-web1 "..." 0644
    """
    from snap_core import accounts as acc

    return acc.write_root_file(path, text, int(str(mode), 8), dry_run=bool(__opts__.get("test")))


def rsnapshot_conf():
    """
    The rsnapshot configuration the backup server uses.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.rsnapshot_conf
    """
    return _core(snap_core.rsnapshot_conf, json.dumps(server_config()))


def rotate(level):
    """
    Sync every complete push into history (lowest level) and rotate ``level``.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.rotate recent
    """
    rec = _core(snap_core.rotate_run, settings()["server"]["config"], level)
    if rec["result"] == "failed":
        __context__["retcode"] = 1
    return rec


def jails():
    """
    What the backup server holds for each server, as it saw it itself: the
    account and jail, the last complete push and the last failure (from the
    receipts root writes), whether a push is running, and what went into
    history. Nothing here is the server's own word.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.jails
    """
    cfg = settings()["server"]["config"]
    view = _core(snap_core.backup_server_view, cfg)
    jails_dir = server_config()["jails_dir"]
    for entry in view.values():
        entry["jail"] = os.path.join(jails_dir, entry["account"])
    return view


def prepare_jail(account, minion_id=None):
    """
    Make or repair the jail of push account ``account``: its home owned by
    root (0711), ``incoming`` (0700) the account's and the only place it can
    write (a btrfs subvolume where quotas are kept with btrfs), nothing else
    in the home but root's own files. Returns what changed; with
    ``test=True``, what would.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.prepare_jail snap-web1
    """
    from snap_core import quota

    srv = _settings()["server"]
    jails = _server_dirs(srv)[0]
    dry = bool(__opts__.get("test"))
    pw = _tables().users.get(account)
    if pw is None:
        if dry:
            return [f"{os.path.join(jails, account)}: would be created with the account"]
        raise CommandExecutionError(f"account {account} does not exist") from None
    changes = []
    limit, _ = _quota_limits(minion_id)
    if limit is not None and _quota_method() == "btrfs":
        incoming = os.path.join(jails, account, "incoming")
        if os.path.isdir(os.path.join(jails, account)):
            changes += _core(quota.make_subvolume, incoming, dry)
            if changes and not dry:
                # The trees are gone with the old incoming: no complete tree any more.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(jails, account, "jail.json"))
    return changes + _core(snap_core.prepare_jail, jails, account, pw.uid, pw.gid, dry_run=dry)


def _quota_limits(minion_id):
    from snap_core import quota

    srv = _settings()["server"]
    overrides = (srv.get("quota_overrides") or {}).get(minion_id) if minion_id else None
    return _core(quota.wanted_limits, srv.get("quota"), overrides, minion_id or "?")


def _quota_method():
    from snap_core import quota

    if "snap.quota_fs" not in __context__:
        srv = _settings()["server"]
        fs = _core(quota.filesystem_of, _server_dirs(srv)[0])
        wanted = (srv.get("quota") or {}).get("method", "auto")
        __context__["snap.quota_fs"] = (fs, _core(quota.method_for, fs, wanted))
    return __context__["snap.quota_fs"][1]


def ensure_quota(account, minion_id):
    """
    Give push account ``account`` (of server ``minion_id``) the quota pillar
    ``snap:server:quota`` (and ``quota_overrides``) asks for, enforced by the
    kernel on the jails' filesystem: Linux user quotas (ext4/XFS) or a btrfs
    qgroup on the jail's subvolume. When the pillar leaves quotas alone
    again (an override removed, the default null), a limit snap set is
    lifted; one set by hand stays. Returns the changes; with ``test=True``,
    what would change.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.ensure_quota snap-web1 web1.example.com
    """
    from snap_core import quota

    limit_bytes, limit_inodes = _quota_limits(minion_id)
    jails = _server_dirs(settings()["server"])[0]
    home = os.path.join(jails, account)
    lifting = limit_bytes is None and limit_inodes is None
    if lifting:
        # Pillar leaves quotas alone: lift only a limit snap itself set.
        if not quota.recorded(home):
            return {}
        limit_bytes, limit_inodes = 0, 0
    dry = bool(__opts__.get("test"))
    method = _quota_method()
    fs = __context__["snap.quota_fs"][0]
    if method == "btrfs":
        if limit_bytes is None:
            raise CommandExecutionError("snap:server:quota: btrfs limits bytes only (set blocks)")
        changes = _core(quota.ensure_btrfs, os.path.join(home, "incoming"), account, limit_bytes, dry)
    else:
        user = _tables().users.get(account)
        if user is None:
            return {"quota": {"old": None, "new": {"bytes": limit_bytes, "inodes": limit_inodes}}} if dry else {}
        if "snap.quota_table" not in __context__:
            __context__["snap.quota_table"] = _core(quota.usrquota_table, fs)
        limit = (limit_bytes or 0, limit_inodes or 0)
        changes = _core(quota.ensure_usrquota, fs, account, user.uid, limit, __context__["snap.quota_table"], dry)
    if lifting:
        quota.forget(home, dry)
    elif changes or not quota.recorded(home):
        quota.remember(home, limit_bytes, limit_inodes, dry)
    return changes


def server_fleet():
    """
    The servers the backup server keeps: :func:`fleet_keys` without the
    backup server itself and the ids in pillar ``snap:server:exclude``.
    Cached for the length of one state run.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.server_fleet
    """
    if "snap.server_fleet" not in __context__:
        srv = _settings()["server"]
        excluded = set(srv.get("exclude") or []) | {__opts__["id"]}
        mine = __salt__["mine.get"]("*", fleet.MINE_FUNCTION)
        mine = {k: v for k, v in mine.items() if k not in excluded}
        result = _core(fleet.validate_mine, mine, srv.get("account_overrides") or {}, account_bindings())
        for minion_id, reason in result["rejected"].items():
            log.error("snap: rejected mine key of %s: %s", minion_id, reason)
        __context__["snap.server_fleet"] = result
    # Read-only for callers: one copy of the fleet table per account made the
    # server state O(N^2).
    return __context__["snap.server_fleet"]


def fleet_account_names():
    """
    The account name of every server in the mine that has or can have one,
    whether or not its current key is acceptable (a server with a bad key
    keeps its account). Accounts outside this set belong to retired servers;
    an account made for a retired server stays outside it even when a new
    server's name would be the same.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.fleet_account_names
    """
    return sorted(set(server_fleet()["names"].values()))


def remove_jail(account):
    """
    Delete the jail of a purged push account (its btrfs subvolume too, if it
    has one). Its history ages out with rotation. Returns the removed path,
    or None if there was nothing. With ``test=True``, removes nothing.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.remove_jail snap-old1
    """
    from snap_core import quota

    jail = os.path.join(_server_dirs(settings()["server"])[0], account)
    if not os.path.lexists(jail):
        return None
    if __opts__.get("test"):
        return jail
    incoming = os.path.join(jail, "incoming")
    if quota.is_subvolume(incoming):
        res = __salt__["cmd.run_all"](["btrfs", "subvolume", "delete", incoming], python_shell=False)
        if res["retcode"]:
            raise CommandExecutionError(f"cannot delete subvolume {incoming}: {res['stderr']}")
    shutil.rmtree(jail)
    return jail


# -- the archive pipeline (backup server) ------------------------------------------------


def archive_config():
    """
    The archive configuration of this backup server (what state
    ``snap.archive_config`` writes to ``/etc/snap/archive.json``), checked by
    the core. Recipients given as armored text in pillar refer to the files
    the state writes under ``archive:recipients_dir``.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.archive_config
    """
    s = settings()
    arc, srv = s["archive"], s["server"]
    recipients = []
    for i, item in enumerate(arc.get("recipients") or []):
        if isinstance(item, str) and item.lstrip().startswith("-----BEGIN"):
            recipients.append({"file": os.path.join(arc["recipients_dir"], f"recipient-{i}.asc"),
                               "label": f"pillar snap:archive:recipients[{i}]"})  # fmt: skip
        elif isinstance(item, str):
            recipients.append({"file": item})
        else:
            raise SaltInvocationError(
                f"pillar snap:archive:recipients[{i}] must be an armored public key or a file path"
            )
    config = {
        "minion_id": __opts__["id"],
        "history_dir": _server_dirs(srv)[1],
        "servers": arc.get("servers"),
        "work_dir": arc["work_dir"],
        "state_dir": srv["state_dir"],
        "recipients": recipients,
        "target": arc.get("target") or {},
        "prefix": arc.get("prefix"),
        "storage_class": arc["storage_class"],
        "retain_days": int(arc["retain_days"]),
        "pack": arc["pack"],
        "chain": arc.get("chain") or {},
        "prices": arc.get("prices") or {},
    }
    return _core(snap_core.parse_archive_config, json.dumps(config))


def check_recipient(text, label="recipient"):
    """
    Check one OpenPGP public key (armored text): secret key material,
    expired, revoked, weak or unusable keys are refused with the reason.
    Returns the key's fingerprint and the subkey that archives are encrypted to.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.check_recipient "$(cat archive-key.asc)"
    """
    keys = _core(snap_core.load_recipients, [(label, text.encode())])
    return [{"fingerprint": k["fingerprint"], "key_id": k["key_id"], "algorithm": k["algorithm"]} for k in keys]


def archive(config=None):
    """
    Run the archive pipeline now on this backup server: pack the history,
    encrypt it to the offline public key(s) while uploading it under Object
    Lock, put the manifest next to it. Returns the run's record, manifest
    included. Progress goes to Salt's log.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.archive
    """
    config = config or settings()["archive"]["config"]

    def progress(event):
        log.info("snap archive: %s", event["text"])

    rec = _core(snap_core.archive_run, config, progress=progress)
    return rec


# -- reporting ---------------------------------------------------------------------------


def last_push():
    """
    This server's record of its last push (``push-last.json``), or None if it
    never ran. Only adds detail to ``salt-run snap.status``: the verdict rests
    on what the backup server received.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.last_push
    """
    path = os.path.join(settings()["client"]["state_dir"], "push-last.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"cannot read {path}: {exc}") from exc


def push_history(limit=21):
    """
    This server's own record of its newest pushes (run id, start, end,
    result, error), oldest first, from ``push.jsonl``. ``salt-run
    snap.status`` compares it with the backup server's receipts and the
    off-site archives: the backup server cannot write it. Publish it through
    the mine too (``mine_functions: {snap.push_history: []}``) so the master
    has it when the server does not answer.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.push_history
        salt '*' mine.get '*' snap.push_history
    """
    from snap_core import crosscheck

    return _core(crosscheck.read_push_history, settings()["client"]["state_dir"], int(limit))


def offsite_inventory(target=None, prefix=None):
    """
    Every archive the off-site store holds under the prefix, listed with
    this minion's READ-ONLY identity (pillar ``snap:verify:target``, as for
    the audit; run it on the drill minion, never the backup server): key,
    when the store says it landed, snapshots per server from its locked
    manifest, and what is broken (object missing, size differs).

    CLI Example:

    .. code-block:: bash

        salt drill1 snap.offsite_inventory
    """
    from snap_core import crosscheck

    cfg = settings().get("verify") or {}
    target = target or cfg.get("target") or {}
    if not target:
        raise SaltInvocationError("no off-site target to list: pillar snap:verify:target (read-only identity)")
    store = _core(snap_core.ArchiveStore, target)
    return _core(crosscheck.offsite_inventory, store, prefix or cfg.get("prefix") or "snap/")


def backup_view():
    """
    The backup server's own view of every server: the last push it received
    completely, the last that broke off, whether one is being received now,
    what went into history; and the last archive run. From receipts that
    snap-receive writes where clients cannot.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.backup_view
    """
    s = settings()
    srv = s["server"]
    view = _core(snap_core.backup_server_view, srv["config"])
    archive = None
    path = os.path.join(srv["state_dir"], "archive-last.json")
    try:
        with open(path, encoding="utf-8") as handle:
            archive = json.load(handle)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"cannot read {path}: {exc}") from exc
    # Only what the backup server saw: what status judges by (exclusions,
    # thresholds, whether an archive is due) the master reads from pillar.
    return {"servers": view, "archive": archive}


def write_metrics(path=None):
    """
    Write Prometheus textfile-collector metrics of the backup server (last
    complete push, bytes, duration per server; archive age and size; drill
    result). Cron runs the same every few minutes.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.write_metrics
    """
    srv = settings()["server"]
    path = path or srv["metrics_file"]
    _core(snap_core.write_metrics, srv["config"], path)
    return path


# -- restore and proof -------------------------------------------------------------------


_TRANSFER_ID = re.compile(r"^[0-9A-Za-z-]{8,64}$")


def _restore_dir(create=True):
    """Root-only directory for restore transfers on this minion."""
    s = settings()
    base = os.path.join(s["client"]["state_dir"], "restore")
    if create:
        os.makedirs(base, mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
    return base


def _transfer_dir(transfer, create=False):
    if not isinstance(transfer, str) or not _TRANSFER_ID.match(transfer):
        raise SaltInvocationError(f"bad restore transfer id {transfer!r}")
    path = os.path.join(_restore_dir(), transfer)
    if create:
        os.mkdir(path, 0o700)
    elif not os.path.isdir(path):
        raise CommandExecutionError(f"restore transfer {transfer} is not on this minion")
    return path


def _history_dir():
    return _server_dirs(settings()["server"])[1]


def _newest_snapshot_of(server):
    inv = [s for s in _core(snap_core.history_inventory, _history_dir()) if server in s["servers"] and s["name"] != ".sync"]
    if not inv:
        raise CommandExecutionError(f"history holds no snapshot of {server}")
    return max(inv, key=lambda s: s["mtime"])["name"]


def restore(server, path="/", to=None, snapshot=None, overwrite=False):
    """
    Restore from this backup server's history (no key, no off-site): one
    file, a directory or a whole server (``path=/``) at ``snapshot``
    (default: the newest holding it) into the directory ``to`` on this
    machine, which stands for the server's ``/``. Ownership, modes, devices,
    ACLs and xattrs come back as the server had them. To put it back onto
    the server itself, use the runner: ``salt-run snap.restore``.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.restore db1 /etc to=/srv/restore/db1
        salt backup1 snap.restore db1 / to=/srv/restore/db1 snapshot=daily.2
    """
    if not to or not os.path.isabs(to):
        raise SaltInvocationError("to= must be an absolute directory on this machine")
    snapshot = snapshot or _newest_snapshot_of(server)
    rep = _core(snap_core.restore_from_history, _history_dir(), snapshot, server, to,
                path=os.fsencode(path), overwrite=bool(overwrite))  # fmt: skip
    rep["snapshot"] = snapshot
    return rep


def restore_pack(server, path="/", snapshot=None, recipient=None, max_bytes=None):
    """
    Backup server, first step of ``salt-run snap.restore``: pack ``path`` of
    ``server`` at ``snapshot`` from history and seal it to the snap SSH key
    of ``recipient`` (default: the server itself) as the mine publishes it,
    validated again. Only that minion can open it; this backup server gets
    no key and no login there. Returns the transfer id, size and sha256.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.restore_pack db1 /etc
    """
    recipient = recipient or server
    mine = __salt__["mine.get"](recipient, fleet.MINE_FUNCTION)
    checked = _core(fleet.validate_mine, mine, _pillar("snap:server:account_overrides", {}))
    if recipient not in checked["accepted"]:
        raise CommandExecutionError(
            f"no acceptable snap key of {recipient} in the mine: "
            f"{checked['rejected'].get(recipient, 'highstate it first (it publishes snap.pubkey)')}"
        )
    key = checked["accepted"][recipient]
    line = key.get("line") or f"{key['type']} {key['key']}"
    snapshot = snapshot or _newest_snapshot_of(server)
    transfer = uuid.uuid4().hex
    work = _transfer_dir(transfer, create=True)
    try:
        image = os.path.join(work, "pick.sqfs")
        packed = _core(snap_core.pack_history_pick, _history_dir(), snapshot, server, image, path=os.fsencode(path))
        limit = int(max_bytes or settings().get("restore", {}).get("max_bytes") or 256 << 20)
        if packed["image_size"] > limit:
            raise CommandExecutionError(
                f"the packed restore is {packed['image_size']} bytes, above the limit of {limit} for the trip "
                "through Salt (pillar snap:restore:max_bytes): restore it to a directory here with snap.restore, "
                "or on the server from off-site with the offline key"
            )
        sealed = os.path.join(work, "pick.sqfs.age")
        info = _core(snap_core.seal_for_server, image, sealed, line)
        os.unlink(image)
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"transfer": transfer, "size": info["size"], "sha256": info["sha256"], "packed": packed,
            "snapshot": snapshot, "recipient": recipient, "fingerprint": key["fingerprint"]}  # fmt: skip


def restore_chunk(transfer, offset, size):
    """
    Backup server: one chunk (base64) of a sealed restore transfer.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.restore_chunk 0f3c... 0 4194304
    """
    path = os.path.join(_transfer_dir(transfer), "pick.sqfs.age")
    with open(path, "rb") as handle:
        handle.seek(int(offset))
        return base64.b64encode(handle.read(int(size))).decode()


def restore_discard(transfer):
    """
    Remove a restore transfer's files from this minion.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.restore_discard 0f3c...
    """
    shutil.rmtree(_transfer_dir(transfer), ignore_errors=True)
    return True


def restore_receive(transfer, offset, data):
    """
    Server: append one chunk (base64) of a sealed restore to this minion's
    root-only transfer area. ``offset`` must be where the file ends now.

    CLI Example:

    .. code-block:: bash

        salt db1 snap.restore_receive 0f3c... 0 <base64>
    """
    offset = int(offset)
    if offset == 0 and not os.path.isdir(os.path.join(_restore_dir(), transfer)):
        _transfer_dir(transfer, create=True)
    path = os.path.join(_transfer_dir(transfer), "pick.sqfs.age")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "ab") as handle:
        if handle.tell() != offset:
            raise CommandExecutionError(f"restore transfer {transfer}: have {handle.tell()} bytes, chunk is for {offset}")
        handle.write(base64.b64decode(data))
        return handle.tell()


def restore_apply(transfer, packed, sha256, server=None, path=None, to="/", overwrite=False, special=False):
    """
    Server: open a received restore with this server's own snap key, check
    it, and extract it into ``to`` (default ``/``: back in place). Existing
    files are only replaced with ``overwrite=True``; otherwise a conflict
    fails the restore before anything moves. The transfer is removed.

    ``server`` and ``path`` are what the operator asked for (the runner
    passes them itself, not through the backup server): the destination is
    rebuilt from them, and the backup server's description of the pick
    (``packed``) must agree. Anything in the image outside that path, a
    whole server when ``/`` was not asked, a parent that is a symlink on
    this server: refused, nothing restored. Device nodes, set-id files and
    file capabilities need ``special=True`` unless ``path`` is ``/``.

    CLI Example:

    .. code-block:: bash

        salt db1 snap.restore_apply 0f3c... '<packed>' <sha256> server=db1 path=/etc/nginx to=/srv/restored
    """
    if not server or not isinstance(server, str) or path is None:
        raise SaltInvocationError("restore_apply needs server= and path= (what the operator asked for)")
    work = _transfer_dir(transfer)
    try:
        image = os.path.join(work, "pick.sqfs")
        _core(snap_core.open_sealed, os.path.join(work, "pick.sqfs.age"), image, settings()["client"]["key"], sha256=sha256)
        return _core(snap_core.extract_history_pick, image, packed, to, server, os.fsencode(path),
                     overwrite=bool(overwrite), special=bool(special))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def drill_sample(random_files=50, max_bytes=None, seed=None):
    """
    Backup server: a drill sample for the newest archive made here (random
    files plus one server, size-capped), described as the servers had them.
    No secrets: paths, hashes and metadata only.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.drill_sample
    """
    from snap_core import restore_cli

    s = settings()
    manifests = os.path.join(s["server"]["state_dir"], "manifests")
    cap = int(max_bytes or (s.get("verify") or {}).get("max_bytes") or 256 << 20)
    try:
        return restore_cli.drill_sample_from(_history_dir(), None, manifests, int(random_files), cap, seed)
    except snap_core.Error as exc:
        raise CommandExecutionError(str(exc)) from exc


def keep_verify_record(record):
    """
    Backup server: keep the latest drill/audit record (from the drill minion,
    passed on by ``salt-run snap.verify``) as ``verify-last.json`` in the
    state directory, where the Prometheus metrics read the drill result. The
    record holds results, keys of archives and hashes; never a key.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.keep_verify_record '{"result": "ok", ...}'
    """
    if not isinstance(record, dict) or record.get("result") not in ("ok", "failed", "pending"):
        raise SaltInvocationError("record must be a verify record (a dict with result ok, failed or pending)")
    state_dir = settings()["server"]["state_dir"]
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, "verify-last.json")
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_metrics()
    return True


def verify(sample=None, key=None, target=None, prefix=None, state_dir=None):
    """
    The off-site audit and, given a drill ``sample`` (from
    ``snap.drill_sample`` on the backup server), the restore drill: the
    newest archive fetched, decrypted with the DRILL key kept on this minion
    (pillar ``snap:verify:key``, a file put here out of band, never pillar
    data), the sample restored and compared. The record is kept in
    ``verify-last.json`` / ``verify.jsonl`` under the state directory.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.verify
        salt-run snap.verify
    """
    s = settings()
    cfg = s.get("verify") or {}
    target = target or cfg.get("target") or {}
    if not target:
        raise SaltInvocationError("no off-site target to verify: pillar snap:verify:target (read-only identity)")
    prefix = prefix or cfg.get("prefix") or "snap/"
    state_dir = state_dir or cfg.get("state_dir") or s["client"]["state_dir"]
    store = _core(snap_core.ArchiveStore, target)
    secret = None
    key = key or cfg.get("key")
    if sample is not None:
        if not key:
            raise SaltInvocationError("a drill needs the drill key on this minion: pillar snap:verify:key (a path)")
        with open(key, "rb") as handle:
            secret = handle.read()

    def progress(event):
        log.info("snap verify: %s", event["text"])

    rec = _core(store.verify, prefix, sample=sample, secret_key=secret, state_dir=state_dir,
                work_dir=cfg.get("work_dir") or "/var/tmp",
                min_retain_days=int(cfg.get("min_retain_days", 90)),
                max_age_days=float(cfg.get("max_age_days", 16)),
                tier=cfg.get("tier", "Bulk"), wait=cfg.get("wait"), progress=progress)  # fmt: skip
    if rec["result"] == "failed":
        __context__["retcode"] = 1
    return rec
