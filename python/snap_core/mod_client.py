"""The snap execution module on the servers that push: their key, the pinned
host key of the backup server, the push configuration and the push itself;
and the mine's view of every server's key (``fleet_keys``).

Bodies of the functions of the same names in ``_modules/snap.py``, which
keeps their docstrings; ``env`` is a :class:`snap_core.mod_env.ModuleEnv`.
"""

import json
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

import snap_core
from snap_core import fleet
from snap_core.mod_env import core


def key_path(env, path=None):
    path = path or env.settings()["client"]["key"]
    if not isinstance(path, str) or not os.path.isabs(path):
        raise SaltInvocationError(f"snap key path must be an absolute path, got {path!r}")
    return path


def pubkey(env, path=None):
    entry = core(fleet.mine_entry, env.opts["id"], key_path(env, path))
    sched = env.settings().get("schedule") or {}
    if "minute" in sched:
        # For salt-run snap.status: when this server is expected to push.
        entry["schedule"] = {k: sched[k] for k in ("minute", "second", "hours") if k in sched}
    return entry


def key_status(env, path=None):
    path = key_path(env, path)
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


def generate_keypair(env, path=None, comment=None):
    path = key_path(env, path)
    comment = comment if comment is not None else f"snap@{env.opts['id']}"
    return core(snap_core.generate_keypair, path, comment)


def restore_public(env, path=None):
    return core(snap_core.restore_public, key_path(env, path))


def account_name(env, minion_id=None):
    return core(snap_core.account_name, minion_id or env.opts["id"])


def schedule(env):
    sched = env.pillar("snap:schedule", {})
    if "minute" not in sched:
        raise CommandExecutionError(
            "pillar snap:schedule:minute is missing: enable the snap ext_pillar on the master "
            "(ext_pillar: [{snap: {}}]) and refresh pillar"
        )
    return sched


def fleet_keys(env, tgt="*", tgt_type="glob", bound=None):
    mine = env.salt["mine.get"](tgt, fleet.MINE_FUNCTION, tgt_type=tgt_type)
    overrides = env.pillar("snap:server:account_overrides", {})
    result = core(fleet.validate_mine, mine, overrides, bound)
    for minion_id, reason in result["rejected"].items():
        env.log.error("snap: rejected mine key of %s: %s", minion_id, reason)
    return result


# -- the backup server's host key, pinned by every client ----------------------


def hostkey(env, path=None):
    path = path or env.settings()["server"]["host_key"]
    if path.endswith(".pub"):
        path = path[: -len(".pub")]
    key = core(fleet.read_public_key, path)
    return {"id": env.opts["id"], "line": f"{key['type']} {key['key']}", "fingerprint": key["fingerprint"]}


def known_hosts_lines(env):
    server = env.settings()["backup_server"]
    host, port = server["host"], int(server["port"])
    pinned = list(server.get("host_keys") or [])
    if not pinned:
        mine = env.salt["mine.get"](server["minion_id"], "snap.hostkey")
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
        key = core(snap_core.parse_public_key, text)
        lines.append(f"{name} {key['type']} {key['key']}")
    return lines


# -- servers: the push ----------------------------------------------------------


def client_config(env):
    s = env.settings()
    client, server = s["client"], s["backup_server"]
    sched = s.get("schedule") or {}
    config = {
        "minion_id": env.opts["id"],
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
    for key in (
        "hook_timeout",
        "nice",
        "ionice_class",
        "ionice_level",
        "retries",
        "retry_delay",
        "connect_timeout",
        "io_timeout",
        "bwlimit_kbps",
    ):
        if client.get(key) is not None:
            config[key] = client[key]
    config["account"] = my_account(env)
    return core(snap_core.parse_push_config, json.dumps(config))


def my_account(env):
    me = env.opts["id"]
    s = env.settings_view()
    overrides = s["server"].get("account_overrides") or {}
    if me in overrides:
        return overrides[me]
    server = s["backup_server"]["minion_id"]
    published = (env.salt["mine.get"](server, "snap.accounts") or {}).get(server)
    if isinstance(published, dict) and isinstance(published.get(me), str):
        return core(snap_core.validate_account_name, published[me]) or published[me]
    return core(snap_core.account_name, me)


def push(env, no_splay=True):
    config = env.settings()["client"]["config"]

    def progress(event):
        env.log.info("snap push: %s", event["text"])

    rec = core(snap_core.push_run, config, no_splay=no_splay, progress=progress)
    if rec["result"] not in ("ok", "partial"):
        env.context["retcode"] = 1
    return rec
