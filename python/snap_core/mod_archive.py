"""The snap execution module's archive pipeline (backup server) and the
views status is built from: each server's own push records, the backup
server's receipts, the off-site listing, the Prometheus metrics.

Bodies of the functions of the same names in ``_modules/snap.py``, which
keeps their docstrings; ``env`` is a :class:`snap_core.mod_env.ModuleEnv`.
"""

import json
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

import snap_core
from snap_core.chains import chains_enabled
from snap_core.mod_env import core, server_dirs


def archive_config(env):
    s = env.settings()
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
    # enabled null (the default): chains, unless the target is a Glacier vault.
    enabled = _chains(arc)  # first: it refuses a chain setting that is no mapping
    chain = {**(arc.get("chain") or {}), "enabled": enabled}
    config = {
        "minion_id": env.opts["id"],
        "history_dir": server_dirs(srv)[1],
        "servers": arc.get("servers"),
        "work_dir": arc["work_dir"],
        "state_dir": srv["state_dir"],
        "recipients": recipients,
        "target": arc.get("target") or {},
        "prefix": arc.get("prefix"),
        "storage_class": arc["storage_class"],
        "retain_days": int(arc["retain_days"]),
        "pack": arc["pack"],
        "chain": chain,
        "prices": arc.get("prices") or {},
    }
    return core(snap_core.parse_archive_config, json.dumps(config))


def _chains(arc):
    try:
        return chains_enabled(arc)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


def check_recipient(text, label="recipient"):
    keys = core(snap_core.load_recipients, [(label, text.encode())])
    return [{"fingerprint": k["fingerprint"], "key_id": k["key_id"], "algorithm": k["algorithm"]} for k in keys]


def archive(env, config=None):
    config = config or env.settings()["archive"]["config"]

    def progress(event):
        env.log.info("snap archive: %s", event["text"])

    rec = core(snap_core.archive_run, config, progress=progress)
    return rec


# -- reporting ---------------------------------------------------------------------------


def last_push(env):
    path = os.path.join(env.settings()["client"]["state_dir"], "push-last.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"cannot read {path}: {exc}") from exc


def push_history(env, limit=21):
    from snap_core import crosscheck

    return core(crosscheck.read_push_history, env.settings()["client"]["state_dir"], int(limit))


def offsite_inventory(env, target=None, prefix=None):
    from snap_core import crosscheck

    cfg = env.settings().get("verify") or {}
    target = target or cfg.get("target") or {}
    if not target:
        raise SaltInvocationError("no off-site target to list: pillar snap:verify:target (read-only identity)")
    store = core(snap_core.ArchiveStore, target)
    return core(crosscheck.offsite_inventory, store, prefix or cfg.get("prefix") or "snap/")


def backup_view(env):
    s = env.settings()
    srv = s["server"]
    view = core(snap_core.backup_server_view, srv["config"])
    archive = None
    path = os.path.join(srv["state_dir"], "archive-last.json")
    try:
        with open(path, encoding="utf-8") as handle:
            archive = json.load(handle)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"cannot read {path}: {exc}") from exc
    # What history still holds of servers with no account here (moved to
    # another backup server, or gone): fleet-wide status says where it lives.
    held = core(snap_core.history_without_account, srv["config"])
    # Only what the backup server saw: what status judges by (exclusions,
    # thresholds, whether an archive is due) the master reads from pillar.
    return {"servers": view, "archive": archive, "held": held}


def write_metrics(env, path=None):
    srv = env.settings()["server"]
    path = path or srv["metrics_file"]
    core(snap_core.write_metrics, srv["config"], path)
    return path
