# Part of the `snap` execution module (_modules/snap.py): restore and proof.
# Written as if inside that module (it uses settings(), _core, _pillar, log,
# snap_core, fleet, json, os, CommandExecutionError, SaltInvocationError);
# the coordinator pastes these functions there.

# -- restore and proof -------------------------------------------------------------------

import base64 as _base64  # noqa: E402
import hashlib as _hashlib  # noqa: E402
import re as _re  # noqa: E402
import shutil as _shutil  # noqa: E402
import uuid as _uuid  # noqa: E402

_TRANSFER_ID = _re.compile(r"^[0-9A-Za-z-]{8,64}$")


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
    return os.path.join(settings()["server"]["base"], "history")


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
    transfer = _uuid.uuid4().hex
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
        _shutil.rmtree(work, ignore_errors=True)
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
        return _base64.b64encode(handle.read(int(size))).decode()


def restore_discard(transfer):
    """
    Remove a restore transfer's files from this minion.

    CLI Example:

    .. code-block:: bash

        salt backup1 snap.restore_discard 0f3c...
    """
    _shutil.rmtree(_transfer_dir(transfer), ignore_errors=True)
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
        handle.write(_base64.b64decode(data))
        return handle.tell()


def restore_apply(transfer, packed, sha256, to="/", overwrite=False):
    """
    Server: open a received restore with this server's own snap key, check
    it, and extract it into ``to`` (default ``/``: back in place). Existing
    files are only replaced with ``overwrite=True``; otherwise a conflict
    fails the restore before anything moves. The transfer is removed.

    CLI Example:

    .. code-block:: bash

        salt db1 snap.restore_apply 0f3c... '<packed>' <sha256> to=/srv/restored
    """
    work = _transfer_dir(transfer)
    try:
        image = os.path.join(work, "pick.sqfs")
        _core(snap_core.open_sealed, os.path.join(work, "pick.sqfs.age"), image, settings()["client"]["key"], sha256=sha256)
        return _core(snap_core.extract_history_pick, image, packed, to, overwrite=bool(overwrite))
    finally:
        _shutil.rmtree(work, ignore_errors=True)


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
