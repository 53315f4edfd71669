"""The snap execution module's restore and proof: restore from the backup
server's history, the sealed trip of a restore through Salt (pack on the
backup server, chunks through the master, open and apply on the server with
its own key), the restore drill and the off-site audit.

Bodies of the functions of the same names in ``_modules/snap.py``, which
keeps their docstrings; ``env`` is a :class:`snap_core.mod_env.ModuleEnv`.
"""

import base64
import json
import os
import re
import shutil
import uuid

from salt.exceptions import CommandExecutionError, SaltInvocationError

import snap_core
from snap_core import fleet
from snap_core.mod_archive import write_metrics
from snap_core.mod_env import core, server_dirs

_TRANSFER_ID = re.compile(r"^[0-9A-Za-z-]{8,64}$")


def restore_dir(env, create=True):
    """Root-only directory for restore transfers on this minion."""
    s = env.settings()
    base = os.path.join(s["client"]["state_dir"], "restore")
    if create:
        os.makedirs(base, mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
    return base


def transfer_dir(env, transfer, create=False):
    if not isinstance(transfer, str) or not _TRANSFER_ID.match(transfer):
        raise SaltInvocationError(f"bad restore transfer id {transfer!r}")
    path = os.path.join(restore_dir(env), transfer)
    if create:
        os.mkdir(path, 0o700)
    elif not os.path.isdir(path):
        raise CommandExecutionError(f"restore transfer {transfer} is not on this minion")
    return path


def history_dir(env):
    return server_dirs(env.settings()["server"])[1]


def newest_snapshot_of(env, server):
    inv = [
        s
        for s in core(snap_core.history_inventory, history_dir(env))
        if server in s["servers"] and s["name"] != ".sync"
    ]
    if not inv:
        raise CommandExecutionError(f"history holds no snapshot of {server}")
    return max(inv, key=lambda s: s["mtime"])["name"]


def restore(env, server, path="/", to=None, snapshot=None, overwrite=False):
    if not to or not os.path.isabs(to):
        raise SaltInvocationError("to= must be an absolute directory on this machine")
    snapshot = snapshot or newest_snapshot_of(env, server)
    rep = core(snap_core.restore_from_history, history_dir(env), snapshot, server, to,
               path=os.fsencode(path), overwrite=bool(overwrite))  # fmt: skip
    rep["snapshot"] = snapshot
    return rep


def restore_pack(env, server, path="/", snapshot=None, recipient=None, max_bytes=None):
    recipient = recipient or server
    mine = env.salt["mine.get"](recipient, fleet.MINE_FUNCTION)
    checked = core(fleet.validate_mine, mine, env.pillar("snap:server:account_overrides", {}))
    if recipient not in checked["accepted"]:
        raise CommandExecutionError(
            f"no acceptable snap key of {recipient} in the mine: "
            f"{checked['rejected'].get(recipient, 'highstate it first (it publishes snap.pubkey)')}"
        )
    key = checked["accepted"][recipient]
    line = key.get("line") or f"{key['type']} {key['key']}"
    snapshot = snapshot or newest_snapshot_of(env, server)
    transfer = uuid.uuid4().hex
    work = transfer_dir(env, transfer, create=True)
    try:
        image = os.path.join(work, "pick.sqfs")
        packed = core(snap_core.pack_history_pick, history_dir(env), snapshot, server, image, path=os.fsencode(path))
        limit = int(max_bytes or env.settings().get("restore", {}).get("max_bytes") or 256 << 20)
        if packed["image_size"] > limit:
            raise CommandExecutionError(
                f"the packed restore is {packed['image_size']} bytes, above the limit of {limit} for the trip "
                "through Salt (pillar snap:restore:max_bytes): restore it to a directory here with snap.restore, "
                "or on the server from off-site with the offline key"
            )
        sealed = os.path.join(work, "pick.sqfs.age")
        info = core(snap_core.seal_for_server, image, sealed, line)
        os.unlink(image)
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"transfer": transfer, "size": info["size"], "sha256": info["sha256"], "packed": packed,
            "snapshot": snapshot, "recipient": recipient, "fingerprint": key["fingerprint"]}  # fmt: skip


def restore_chunk(env, transfer, offset, size):
    path = os.path.join(transfer_dir(env, transfer), "pick.sqfs.age")
    with open(path, "rb") as handle:
        handle.seek(int(offset))
        return base64.b64encode(handle.read(int(size))).decode()


def restore_discard(env, transfer):
    shutil.rmtree(transfer_dir(env, transfer), ignore_errors=True)
    return True


def restore_receive(env, transfer, offset, data):
    offset = int(offset)
    if offset == 0 and not os.path.isdir(os.path.join(restore_dir(env), transfer)):
        transfer_dir(env, transfer, create=True)
    path = os.path.join(transfer_dir(env, transfer), "pick.sqfs.age")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "ab") as handle:
        if handle.tell() != offset:
            raise CommandExecutionError(
                f"restore transfer {transfer}: have {handle.tell()} bytes, chunk is for {offset}"
            )
        handle.write(base64.b64decode(data))
        return handle.tell()


def restore_apply(env, transfer, packed, sha256, server=None, path=None, to="/", overwrite=False, special=False):
    if not server or not isinstance(server, str) or path is None:
        raise SaltInvocationError("restore_apply needs server= and path= (what the operator asked for)")
    work = transfer_dir(env, transfer)
    try:
        image = os.path.join(work, "pick.sqfs")
        key = env.settings()["client"]["key"]
        core(snap_core.open_sealed, os.path.join(work, "pick.sqfs.age"), image, key, sha256=sha256)
        return core(snap_core.extract_history_pick, image, packed, to, server, os.fsencode(path),
                    overwrite=bool(overwrite), special=bool(special))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def drill_sample(env, random_files=50, max_bytes=None, seed=None):
    from snap_core import restore_cli

    s = env.settings()
    manifests = os.path.join(s["server"]["state_dir"], "manifests")
    cap = int(max_bytes or (s.get("verify") or {}).get("max_bytes") or 256 << 20)
    try:
        return restore_cli.drill_sample_from(history_dir(env), None, manifests, int(random_files), cap, seed)
    except snap_core.Error as exc:
        raise CommandExecutionError(str(exc)) from exc


def keep_verify_record(env, record):
    if not isinstance(record, dict) or record.get("result") not in ("ok", "failed", "pending"):
        raise SaltInvocationError("record must be a verify record (a dict with result ok, failed or pending)")
    state_dir = env.settings()["server"]["state_dir"]
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
    write_metrics(env)
    return True


def verify(env, sample=None, key=None, target=None, prefix=None, state_dir=None):
    s = env.settings()
    cfg = s.get("verify") or {}
    target = target or cfg.get("target") or {}
    if not target:
        raise SaltInvocationError("no off-site target to verify: pillar snap:verify:target (read-only identity)")
    prefix = prefix or cfg.get("prefix") or "snap/"
    state_dir = state_dir or cfg.get("state_dir") or s["client"]["state_dir"]
    store = core(snap_core.ArchiveStore, target)
    secret = None
    key = key or cfg.get("key")
    if sample is not None:
        if not key:
            raise SaltInvocationError("a drill needs the drill key on this minion: pillar snap:verify:key (a path)")
        with open(key, "rb") as handle:
            secret = handle.read()

    def progress(event):
        env.log.info("snap verify: %s", event["text"])

    rec = core(store.verify, prefix, sample=sample, secret_key=secret, state_dir=state_dir,
               work_dir=cfg.get("work_dir") or "/var/tmp",
               min_retain_days=int(cfg.get("min_retain_days", 90)),
               max_age_days=float(cfg.get("max_age_days", 16)),
               tier=cfg.get("tier", "Bulk"), wait=cfg.get("wait"), progress=progress)  # fmt: skip
    if rec["result"] == "failed":
        env.context["retcode"] = 1
    return rec
