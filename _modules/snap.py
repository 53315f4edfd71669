"""
snap: fleet backups that survive a compromised host or backup server.

Execution module. It stays thin: it validates arguments, calls the Rust core
(the ``snap_core`` Python package, installed by state ``snap.core``) and shapes
Salt's return. Each function here keeps its name, signature and docstring and
calls its body in ``snap_core.mod_client`` (keys, pinned host key, push),
``snap_core.mod_server`` (the backup server: accounts, jails, quotas, rotation),
``snap_core.mod_archive`` (archive pipeline and status views) or
``snap_core.mod_restore`` (restore, drill, audit), passing the loader's dunders
in a ``snap_core.mod_env.ModuleEnv``.

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

# The snap core API these modules are written against (snap_core.api).
NEEDS_CORE_API = (2, 5)

try:
    import snap_core
    from snap_core import mod_archive as _archive
    from snap_core import mod_client as _client
    from snap_core import mod_env as _mod_env
    from snap_core import mod_restore as _restore
    from snap_core import mod_server as _server
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


def _env():
    """The loader's dunders and this module's logger, for the bodies in snap_core.mod_*."""
    return _mod_env.ModuleEnv(__salt__, __opts__, __grains__, __context__, log)


def settings():
    """
    Return snap's settings on this minion: ``salt://snap/defaults.yaml`` with
    pillar ``snap`` merged over it, and snap's own paths under this minion's
    ``root_dir`` (``/`` in production). ``snap/map.jinja`` applies the same rule.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.settings
    """
    return _env().settings()


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
    return _client.pubkey(_env(), path)


def key_status(path=None):
    """
    Report the state of this server's snap key pair without changing anything.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.key_status
    """
    return _client.key_status(_env(), path)


def generate_keypair(path=None, comment=None):
    """
    Create this server's Ed25519 snap key pair; never overwrites an existing key.

    Returns the SHA256 fingerprint.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.generate_keypair
    """
    return _client.generate_keypair(_env(), path, comment)


def restore_public(path=None):
    """
    Rewrite a lost ``.pub`` file from the private key; never overwrites.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.restore_public
    """
    return _client.restore_public(_env(), path)


def account_name(minion_id=None):
    """
    Return the backup server's account name for a minion id (default: this minion).

    CLI Example:

    .. code-block:: bash

        salt '*' snap.account_name
        salt-call snap.account_name web1.example.com
    """
    return _client.account_name(_env(), minion_id)


def schedule():
    """
    Return this minion's backup schedule as the ext_pillar computed it.

    CLI Example:

    .. code-block:: bash

        salt '*' snap.schedule
    """
    return _client.schedule(_env())


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
    return _client.fleet_keys(_env(), tgt, tgt_type, bound)


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
    return _client.hostkey(_env(), path)


def known_hosts_lines():
    """
    The known_hosts lines a client pins for its backup server: the keys in
    pillar ``snap:backup_server:host_keys``, or else the one the backup server
    publishes through the mine (``snap.hostkey``), each validated again.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.known_hosts_lines
    """
    return _client.known_hosts_lines(_env())


# -- servers: the push ----------------------------------------------------------


def client_config():
    """
    The push configuration of this server (what state ``snap.client_config``
    writes to ``/etc/snap/client.json``), checked by the core.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.client_config
    """
    return _client.client_config(_env())


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
    return _client.my_account(_env())


def push(no_splay=True):
    """
    Push this server's data to the backup server now (cron runs the same with
    ``python -m snap_core push``). Returns the run's record.

    CLI Example:

    .. code-block:: bash

        salt web1 snap.push
    """
    return _client.push(_env(), no_splay)


# -- the backup server ------------------------------------------------------------


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
    return _server.server_config(_env())


def server_settings():
    """
    The backup server's settings (``snap:server`` over the defaults), read-only.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.server_settings
    """
    return _server.server_settings(_env())


def account_complete(minion_id):
    """
    Whether the push account of ``minion_id`` fully exists (see
    :func:`complete_accounts`).

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.account_complete web1.example.com
    """
    return _server.account_complete(_env(), minion_id)


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
    return _server.complete_accounts(_env())


def push_account_info():
    """
    Every push account on this backup server (primary group or member of
    the push group): ``{account: {uid, home, shell, comment, expire}}``.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.push_account_info
    """
    return _server.push_account_info(_env())


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
    return _server.account_bindings(_env())


def accounts():
    """
    The backup server's account of every server it keeps (``{minion id:
    account}``), for the mine (``mine_functions: {snap.accounts: []}`` on the
    backup server): each server reads its own account name from here.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.accounts
    """
    return _server.accounts(_env())


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
    return _server.ensure_account(_env(), minion_id)


def make_accounts():
    """
    Make every missing push account of this backup server's fleet in one
    pass of the account tables (``newusers -r``, then ``chpasswd -e`` for the
    ``*`` password): the same accounts one ``useradd`` each would make, for a
    10,000-server fleet in seconds instead of minutes. Fewer than two are
    left to :func:`ensure_account`. What was made is read back from the
    tables. Returns ``{"made": {account: minion id}, "planned": n, "error":
    text}``; with ``test=True`` what would be made. Jails, quotas and keys
    stay with each server's ``snap.account`` state.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.make_accounts
    """
    return _server.make_accounts(_env())


def write_root_file(path, text, mode="0644"):
    """
    Make ``path`` a root-owned file holding ``text`` (mode ``mode``), written
    atomically and only when it differs. Returns whether it changed (with
    ``test=True``, whether it would).

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.write_root_file /etc/snap/authorized_keys/snap-web1 "..." 0644
    """
    return _server.write_root_file(_env(), path, text, mode)


def rsnapshot_conf():
    """
    The rsnapshot configuration the backup server uses.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.rsnapshot_conf
    """
    return _server.rsnapshot_conf(_env())


def rotate(level):
    """
    Sync every complete push into history (lowest level) and rotate ``level``.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.rotate recent
    """
    return _server.rotate(_env(), level)


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
    return _server.jails(_env())


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
    return _server.prepare_jail(_env(), account, minion_id)


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
    return _server.ensure_quota(_env(), account, minion_id)


def assigned_here(minion_id):
    """
    Backup server: whether ``minion_id`` is one of the servers this backup
    server keeps. Always True with one backup server; with several (pillar
    ``snap:backup_servers``) the assignment the ext_pillar gives the server
    (docs/SCALE.md), and never for another backup server.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.assigned_here web1.example.com
    """
    return _server.assigned_here(_env(), minion_id)


def server_fleet():
    """
    The servers the backup server keeps: :func:`fleet_keys` without the
    backup server itself and the ids in pillar ``snap:server:exclude``.
    Cached for the length of one state run.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.server_fleet
    """
    return _server.server_fleet(_env())


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
    return _server.fleet_account_names(_env())


def remove_jail(account):
    """
    Delete the jail of a purged push account (its btrfs subvolume too, if it
    has one). Its history ages out with rotation. Returns the removed path,
    or None if there was nothing. With ``test=True``, removes nothing.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.remove_jail snap-old1
    """
    return _server.remove_jail(_env(), account)


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
    return _archive.archive_config(_env())


def check_recipient(text, label="recipient"):
    """
    Check one OpenPGP public key (armored text): secret key material,
    expired, revoked, weak or unusable keys are refused with the reason.
    Returns the key's fingerprint and the subkey that archives are encrypted to.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.check_recipient "$(cat archive-key.asc)"
    """
    return _archive.check_recipient(text, label)


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
    return _archive.archive(_env(), config)


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
    return _archive.last_push(_env())


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
    return _archive.push_history(_env(), limit)


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
    return _archive.offsite_inventory(_env(), target, prefix)


def backup_view():
    """
    The backup server's own view of every server: the last push it received
    completely, the last that broke off, whether one is being received now,
    what went into history; and the last archive run. From receipts that
    snap-receive writes where clients cannot. ``held``: what history still
    holds of servers with no account here any more (moved or gone).

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.backup_view
    """
    return _archive.backup_view(_env())


def write_metrics(path=None):
    """
    Write Prometheus textfile-collector metrics of the backup server (last
    complete push, bytes, duration per server; archive age and size; drill
    result). Cron runs the same every few minutes.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.write_metrics
    """
    return _archive.write_metrics(_env(), path)


# -- restore and proof -------------------------------------------------------------------


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
    return _restore.restore(_env(), server, path, to, snapshot, overwrite)


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
    return _restore.restore_pack(_env(), server, path, snapshot, recipient, max_bytes)


def restore_chunk(transfer, offset, size):
    """
    Backup server: one chunk (base64) of a sealed restore transfer.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.restore_chunk 0f3c... 0 4194304
    """
    return _restore.restore_chunk(_env(), transfer, offset, size)


def restore_discard(transfer):
    """
    Remove a restore transfer's files from this minion.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.restore_discard 0f3c...
    """
    return _restore.restore_discard(_env(), transfer)


def restore_receive(transfer, offset, data):
    """
    Server: append one chunk (base64) of a sealed restore to this minion's
    root-only transfer area. ``offset`` must be where the file ends now.

    CLI Example:

    .. code-block:: bash

        salt db1 snap.restore_receive 0f3c... 0 <base64>
    """
    return _restore.restore_receive(_env(), transfer, offset, data)


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
    return _restore.restore_apply(_env(), transfer, packed, sha256, server, path, to, overwrite, special)


def drill_sample(random_files=50, max_bytes=None, seed=None):
    """
    Backup server: a drill sample for the newest archive made here (random
    files plus one server, size-capped), described as the servers had them.
    No secrets: paths, hashes and metadata only.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.drill_sample
    """
    return _restore.drill_sample(_env(), random_files, max_bytes, seed)


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
    return _restore.keep_verify_record(_env(), record)


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
    return _restore.verify(_env(), sample, key, target, prefix, state_dir)
