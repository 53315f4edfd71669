"""The snap execution module on the backup server: its configuration, the
fleet it keeps, one push account, jail and quota per server, rotation.

Bodies of the functions of the same names in ``_modules/snap.py``, which
keeps their docstrings; ``env`` is a :class:`snap_core.mod_env.ModuleEnv`.
Account tables (:mod:`snap_core.accounts`), the fleet and the quota
filesystem are read once per state run and kept in ``__context__``.
"""

import contextlib
import json
import os
import shutil
import subprocess

from salt.exceptions import CommandExecutionError

import snap_core
from snap_core import fleet
from snap_core.mod_env import core, server_dirs

#: Fewer new accounts than this are made one ``useradd`` each by their own states.
MAKE_AT_ONCE_MIN = 2
#: snap:server:uid_range's default (salt/snap/defaults.yaml): above nobody
#: and 16-bit -1, below shadow-utils' subordinate ids (SUB_UID_MIN 100000)
#: and systemd's container ranges (524288 up).
DEFAULT_UID_RANGE = (65536, 99999)


def server_config(env):
    srv = env.settings_view()["server"]
    jails, history = server_dirs(srv)
    accounts = complete_accounts(env)
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
    return core(snap_core.parse_server_config, json.dumps(config))


def tables(env):
    """The user, group and shadow tables, read once per state run (snap_core.accounts)."""
    if "snap.tables" not in env.context:
        from snap_core import accounts

        env.context["snap.tables"] = accounts.Tables(env.settings_view()["server"]["group"])
    return env.context["snap.tables"]


def server_settings(env):
    return env.settings_view()["server"]


def account_complete(env, minion_id):
    key = server_fleet(env)["accepted"].get(minion_id)
    return bool(key) and complete(env, key["account"], minion_id)


def complete(env, account, minion_id):
    """Whether ``account`` is the user bound to ``minion_id``, in the push group, with its jail."""
    tabs = tables(env)
    user = tabs.users.get(account)
    jails = server_dirs(env.settings_view()["server"])[0]
    return (
        user is not None
        and user.bound_to == minion_id
        and tabs.in_group(user)
        and tabs.uid_holders.get(user.uid, 1) == 1  # whoever shares the uid owns the jail
        and os.path.isdir(os.path.join(jails, account, "incoming"))
    )


def complete_accounts(env):
    accepted = server_fleet(env)["accepted"]
    return {key["account"]: m for m, key in accepted.items() if complete(env, key["account"], m)}


def push_account_info(env):
    return {
        u.name: {"uid": u.uid, "home": u.home, "shell": u.shell, "comment": u.gecos, "expire": u.expire}
        for u in tables(env).push_accounts()
    }


def account_bindings(env):
    return tables(env).bindings()


def accounts(env):
    return {minion_id: key["account"] for minion_id, key in server_fleet(env)["accepted"].items()}


def ensure_account(env, minion_id):
    from snap_core import accounts as acc

    fleet = server_fleet(env)
    if minion_id in fleet["rejected"]:
        raise CommandExecutionError(
            f"{minion_id} gets no push account, its existing one (if any) is left as it was: "
            f"{fleet['rejected'][minion_id]}"
        )
    if minion_id not in fleet["accepted"]:
        raise CommandExecutionError(f"{minion_id} has published no snap key in the mine (snap.pubkey)")
    srv = env.settings_view()["server"]
    account = fleet["accepted"][minion_id]["account"]
    jail = os.path.join(server_dirs(srv)[0], account)
    tabs = tables(env)
    dry = bool(env.opts.get("test"))
    if dry and tabs.gid is None:  # the group comes with this same run
        new = {"name": account, "group": srv["group"]}
        return {"account": account, "jail": jail, "changes": {"user": {"old": None, "new": new}}}
    with _accounts_lock(env, dry):
        try:
            uid_range = acc.parse_uid_range(srv.get("uid_range") or list(DEFAULT_UID_RANGE))
            cmd, changes = acc.plan(tabs, account, minion_id, jail, uid_range)
        except acc.AccountError as exc:
            raise CommandExecutionError(str(exc)) from None
        if cmd and not dry:
            # subprocess directly: cmd.run_all added ~2 ms per account of Salt's
            # command machinery to a ~20 ms useradd (docs/BENCHMARKS.md, Fleet scale).
            res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
            if res.returncode:
                raise CommandExecutionError(f"{cmd[0]} {account} failed: {(res.stderr or res.stdout).strip()}")
            acc.applied(tabs, account, minion_id, jail, cmd)
    if dry and cmd and cmd[0] == "useradd":
        return {"account": account, "jail": jail, "changes": changes}
    jail_changes = prepare_jail(env, account, minion_id)
    if jail_changes:
        changes["jail"] = jail_changes
    changes.update(ensure_quota(env, account, minion_id))
    return {"account": account, "jail": jail, "changes": changes}


def make_accounts(env):
    """Every missing push account of this backup server's fleet, made in one
    pass of the tables (:func:`snap_core.accounts.make_at_once`); each
    server's own ``snap.account`` state completes it (jail, quota, key) and
    makes alone what this could not."""
    from snap_core import accounts as acc

    fleet = server_fleet(env)
    srv = env.settings_view()["server"]
    jails = server_dirs(srv)[0]
    tabs = tables(env)
    missing = {m: key["account"] for m, key in fleet["accepted"].items() if key["account"] not in tabs.users}
    if len(missing) < MAKE_AT_ONCE_MIN:
        return {"made": {}, "planned": len(missing), "error": ""}
    dry = bool(env.opts.get("test"))
    if tabs.gid is None:
        if dry:  # the group comes with this same run
            return {"made": {a: m for m, a in missing.items()}, "planned": len(missing), "error": ""}
        return {"made": {}, "planned": len(missing), "error": f"group {tabs.group} does not exist"}
    try:
        uid_range = acc.parse_uid_range(srv.get("uid_range") or list(DEFAULT_UID_RANGE))
    except acc.AccountError as exc:
        raise CommandExecutionError(str(exc)) from None
    with _accounts_lock(env, dry):
        # Planned on a copy: if the pass makes nothing, the run's tables must
        # not believe in the uids handed out here.
        draft = acc.scratch(tabs)
        planned = {}
        for minion_id, account in sorted(missing.items()):
            home = os.path.join(jails, account)
            try:
                cmd, _ = acc.plan(draft, account, minion_id, home, uid_range)
            except acc.AccountError:
                continue  # its own state names the problem
            if cmd and cmd[0] == "useradd":
                planned[account] = (minion_id, home, cmd)
                acc.applied(draft, account, minion_id, home, cmd)  # the next plan takes the next uid
        if dry:
            return {"made": {a: p[0] for a, p in planned.items()}, "planned": len(planned), "error": ""}
        made, error = acc.make_at_once(tabs, planned) if planned else ([], "")
    return {"made": {a: planned[a][0] for a in made}, "planned": len(planned), "error": error}


@contextlib.contextmanager
def _accounts_lock(env, dry=False):
    """One snap call at a time makes or changes push accounts on this backup
    server (``<run_dir>/accounts.lock``): a second one planning from the same
    tables would hand out the same uids."""
    if dry:
        yield
        return
    import fcntl

    run_dir = env.settings_view()["server"]["run_dir"]
    os.makedirs(run_dir, exist_ok=True)
    fd = os.open(os.path.join(run_dir, "accounts.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_root_file(env, path, text, mode="0644"):
    from snap_core import accounts as acc

    return acc.write_root_file(path, text, int(str(mode), 8), dry_run=bool(env.opts.get("test")))


def rsnapshot_conf(env):
    return core(snap_core.rsnapshot_conf, json.dumps(server_config(env)))


def rotate(env, level):
    rec = core(snap_core.rotate_run, env.settings()["server"]["config"], level)
    if rec["result"] == "failed":
        env.context["retcode"] = 1
    return rec


def jails(env):
    cfg = env.settings()["server"]["config"]
    view = core(snap_core.backup_server_view, cfg)
    jails_dir = server_config(env)["jails_dir"]
    for entry in view.values():
        entry["jail"] = os.path.join(jails_dir, entry["account"])
    return view


def prepare_jail(env, account, minion_id=None):
    from snap_core import quota

    srv = env.settings_view()["server"]
    jails = server_dirs(srv)[0]
    dry = bool(env.opts.get("test"))
    pw = tables(env).users.get(account)
    if pw is None:
        if dry:
            return [f"{os.path.join(jails, account)}: would be created with the account"]
        raise CommandExecutionError(f"account {account} does not exist") from None
    changes = []
    limit, _ = quota_limits(env, minion_id)
    if limit is not None and quota_method(env) == "btrfs":
        incoming = os.path.join(jails, account, "incoming")
        if os.path.isdir(os.path.join(jails, account)):
            changes += core(quota.make_subvolume, incoming, dry)
            if changes and not dry:
                # The trees are gone with the old incoming: no complete tree any more.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(jails, account, "jail.json"))
    return changes + core(snap_core.prepare_jail, jails, account, pw.uid, pw.gid, dry_run=dry)


def quota_limits(env, minion_id):
    from snap_core import quota

    srv = env.settings_view()["server"]
    overrides = (srv.get("quota_overrides") or {}).get(minion_id) if minion_id else None
    return core(quota.wanted_limits, srv.get("quota"), overrides, minion_id or "?")


def quota_method(env):
    from snap_core import quota

    if "snap.quota_fs" not in env.context:
        srv = env.settings_view()["server"]
        fs = core(quota.filesystem_of, server_dirs(srv)[0])
        wanted = (srv.get("quota") or {}).get("method", "auto")
        env.context["snap.quota_fs"] = (fs, core(quota.method_for, fs, wanted))
    return env.context["snap.quota_fs"][1]


def ensure_quota(env, account, minion_id):
    from snap_core import quota

    limit_bytes, limit_inodes = quota_limits(env, minion_id)
    jails = server_dirs(env.settings()["server"])[0]
    home = os.path.join(jails, account)
    lifting = limit_bytes is None and limit_inodes is None
    if lifting:
        # Pillar leaves quotas alone: lift only a limit snap itself set.
        if not quota.recorded(home):
            return {}
        limit_bytes, limit_inodes = 0, 0
    dry = bool(env.opts.get("test"))
    method = quota_method(env)
    fs = env.context["snap.quota_fs"][0]
    if method == "btrfs":
        if limit_bytes is None:
            raise CommandExecutionError("snap:server:quota: btrfs limits bytes only (set blocks)")
        changes = core(quota.ensure_btrfs, os.path.join(home, "incoming"), account, limit_bytes, dry)
    else:
        user = tables(env).users.get(account)
        if user is None:
            return {"quota": {"old": None, "new": {"bytes": limit_bytes, "inodes": limit_inodes}}} if dry else {}
        if "snap.quota_table" not in env.context:
            env.context["snap.quota_table"] = core(quota.usrquota_table, fs)
        limit = (limit_bytes or 0, limit_inodes or 0)
        changes = core(quota.ensure_usrquota, fs, account, user.uid, limit, env.context["snap.quota_table"], dry)
    if lifting:
        quota.forget(home, dry)
    elif changes or not quota.recorded(home):
        quota.remember(home, limit_bytes, limit_inodes, dry)
    return changes


def server_fleet(env):
    if "snap.server_fleet" not in env.context:
        srv = env.settings_view()["server"]
        excluded = set(srv.get("exclude") or []) | {env.opts["id"]}
        mine = env.salt["mine.get"]("*", fleet.MINE_FUNCTION)
        mine = {k: v for k, v in mine.items() if k not in excluded and assigned_here(env, k)}
        result = core(fleet.validate_mine, mine, srv.get("account_overrides") or {}, account_bindings(env))
        for minion_id, reason in result["rejected"].items():
            env.log.error("snap: rejected mine key of %s: %s", minion_id, reason)
        env.context["snap.server_fleet"] = result
    # Read-only for callers: one copy of the fleet table per account made the
    # server state O(N^2).
    return env.context["snap.server_fleet"]


def assigned_here(env, minion_id):
    """With several backup servers (pillar ``snap:backup_servers``), whether
    ``minion_id`` is assigned to this one (the same choice the ext_pillar
    makes for the server: docs/SCALE.md). A backup server is never one of
    another's servers (no backup server may log in to another). A malformed
    id stays in, for ``validate_mine`` to reject by name."""
    try:
        assignment = fleet.backup_assignment(env.settings_view())
    except snap_core.InvalidInput as exc:
        raise CommandExecutionError(str(exc)) from exc
    if assignment is None:
        return True
    backups, explicit = assignment
    if minion_id in backups:
        return False
    try:
        chosen = fleet.assigned_backup_server(minion_id, backups, explicit)
    except (snap_core.InvalidInput, ValueError) as exc:
        if minion_id in explicit:  # sent to a backup server that is not named: not here
            env.log.error("snap: %s", exc)
            return False
        return True
    return chosen == env.opts["id"]


def fleet_account_names(env):
    return sorted(set(server_fleet(env)["names"].values()))


def remove_jail(env, account):
    from snap_core import quota

    jail = os.path.join(server_dirs(env.settings()["server"])[0], account)
    if not os.path.lexists(jail):
        return None
    if env.opts.get("test"):
        return jail
    incoming = os.path.join(jail, "incoming")
    if quota.is_subvolume(incoming):
        res = env.salt["cmd.run_all"](["btrfs", "subvolume", "delete", incoming], python_shell=False)
        if res["retcode"]:
            raise CommandExecutionError(f"cannot delete subvolume {incoming}: {res['stderr']}")
    shutil.rmtree(jail)
    return jail
