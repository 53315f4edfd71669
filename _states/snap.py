"""
snap states: thin wrappers over the ``snap`` execution module.

Every state honours ``test=True`` and reports ``changes`` truthfully; applying
one twice changes nothing the second time.

.. code-block:: yaml

    snap-key:
      snap.keypair:
        - name: /etc/snap/id_ed25519
"""

import json
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

# The snap core API these modules are written against (snap_core.api).
NEEDS_CORE_API = (2, 5)

try:
    from snap_core import chains as snap_chains
    from snap_core import provision as snap_provision
    from snap_core.api import incompatible

    HAS_CORE = True
    IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover
    HAS_CORE = False
    IMPORT_ERROR = str(exc)

__virtualname__ = "snap"


def __virtual__():
    if "snap.pubkey" not in __salt__:
        return (
            False,
            "snap: the snap execution module is not loaded (the snap_core package is missing; "
            "apply state snap.core first)",
        )
    stale = HAS_CORE and incompatible(NEEDS_CORE_API, __file__, "snap state module")
    if stale:
        return (False, stale)
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def keypair(name, comment=None):
    """
    Ensure this server's snap SSH key pair exists: an Ed25519 private key at
    ``name`` (mode 0600) and its public key at ``name.pub``.

    An existing key is never replaced. A private key with a lost ``.pub`` gets
    its public half written again; a ``.pub`` without its private key, or one
    that does not match it, is an error for an operator to resolve.

    name
        Path of the private key, e.g. ``/etc/snap/id_ed25519``. Its directory
        must exist.

    comment
        Comment of a newly generated key (default ``snap@<minion id>``).

    .. code-block:: yaml

        /etc/snap/id_ed25519:
          snap.keypair
    """
    ret = _ret(name)
    try:
        status = __salt__["snap.key_status"](name)
    except Exception as exc:  # pylint: disable=broad-except
        ret.update(result=False, comment=f"Cannot inspect {name}: {exc}")
        return ret
    if status["error"]:
        ret.update(result=False, comment=f"Key {name} is unusable: {status['error']}")
        return ret

    if not status["private"] and status["public"]:
        ret.update(
            result=False,
            comment=(
                f"{name}.pub exists without its private key {name}; restore the private key "
                "or remove the stale public key (snap never overwrites a key)"
            ),
        )
        return ret
    if status["private"] and status["public"] and not status["matches"]:
        ret.update(
            result=False,
            comment=f"{name}.pub does not match the private key {name}; refusing to guess which is right",
        )
        return ret

    changes = {}
    if not status["private"]:
        if __opts__["test"]:
            ret.update(
                result=None,
                comment=f"Ed25519 key pair would be generated at {name}",
                changes={"generated": {"old": None, "new": name}},
            )
            return ret
        try:
            fingerprint = __salt__["snap.generate_keypair"](name, comment=comment)
        except CommandExecutionError as exc:
            ret.update(result=False, comment=f"Cannot generate key {name}: {exc}")
            return ret
        ret.update(
            comment=f"Generated Ed25519 key pair {name} ({fingerprint})",
            changes={"generated": {"old": None, "new": name}, "fingerprint": {"old": None, "new": fingerprint}},
        )
        return ret

    if status["private_mode"] != "0600":
        changes["mode"] = {"old": status["private_mode"], "new": "0600"}
    if not status["public"]:
        changes["public"] = {"old": None, "new": f"{name}.pub"}

    if not changes:
        ret["comment"] = f"Key pair {name} is in place ({status['fingerprint']})"
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment=f"Key pair {name} would be repaired")
        return ret
    try:
        if "mode" in changes:
            __salt__["file.set_mode"](name, "0600")
        if "public" in changes:
            __salt__["snap.restore_public"](name)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=f"Cannot repair key pair {name}: {exc}")
        return ret
    ret.update(changes=changes, comment=f"Repaired key pair {name} ({status['fingerprint']})")
    return ret


# -- helpers ------------------------------------------------------------------------


def _merge(ret, label, sub):
    """Fold a sub-state's return into ``ret`` under ``label``."""
    if sub.get("changes"):
        ret["changes"][label] = sub["changes"]
    if sub.get("result") is False:
        ret["result"] = False
    elif sub.get("result") is None and ret["result"] is not False:
        ret["result"] = None
    if sub.get("result") is False or sub.get("changes"):
        ret.setdefault("_comments", []).append(f"{label}: {sub.get('comment')}")
    return sub.get("result") is not False


def _finish(ret, summary):
    details = ret.pop("_comments", [])
    ret["comment"] = "\n".join([summary] + details)
    return ret


def _fail(ret, comment):
    ret.update(result=False, comment=comment)
    return ret


def _file(name, contents, mode, **kwargs):
    return __states__["file.managed"](
        name=name, contents=contents, user="root", group="root", mode=mode, makedirs=True, **kwargs
    )


# -- servers -----------------------------------------------------------------------


def known_hosts(name):
    """
    Pin the backup server's SSH host key(s) in ``name`` (a known_hosts file
    used only by snap's push): from pillar ``snap:backup_server:host_keys`` or
    from the mine (``snap.hostkey``), validated. No key, no file: the push never
    trusts a host key on first use.

    .. code-block:: yaml

        /etc/snap/known_hosts:
          snap.known_hosts
    """
    ret = _ret(name)
    try:
        lines = __salt__["snap.known_hosts_lines"]()
    except CommandExecutionError as exc:
        return _fail(ret, str(exc))
    _merge(ret, "known_hosts", _file(name, "\n".join(lines) + "\n", "0644"))
    return _finish(ret, f"Backup server host key pinned in {name}")


def client_config(name):
    """
    Write this server's push configuration (JSON) to ``name`` from pillar,
    checked by the core first.

    .. code-block:: yaml

        /etc/snap/client.json:
          snap.client_config
    """
    ret = _ret(name)
    try:
        config = __salt__["snap.client_config"]()
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, f"Push configuration is invalid: {exc}")
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    _merge(ret, "config", _file(name, text, "0600"))
    return _finish(ret, f"Push configuration {name} for account {config['account']}")


# -- the backup server -----------------------------------------------------------------


def account(name):
    """
    Ensure the jailed push account of server ``name`` (a minion id) on the
    backup server: a user with the name the fleet's naming rule gives it
    (``snap.ensure_account``), made with one ``useradd``: a uid from pillar
    ``snap:server:uid_range``, the shared push group as its primary group,
    its comment ``snap push account of <id>`` (binding it to that server for
    good), password ``*`` (no password login), shell ``/bin/sh`` (sshd runs
    the forced command through it), home ``<jails>/<account>`` owned by root
    (0711) with ``incoming`` (0700) the only place the account can write, an
    optional quota; then one authorized key (root-owned, outside the jail)
    pinned to ``restrict,command="sudo -n snap-receive <server.json>"``.

    The key is written only once the user and its jail exist: a failure
    leaves no key without a user, and a key whose account is broken is
    removed (``server.json`` lists only complete accounts). The key comes
    from the mine and is validated again; a server whose key is rejected
    keeps its account exactly as it was, and the state fails with the
    reason. An account made for another server (in the fleet or retired) is
    never handed over.

    .. code-block:: yaml

        snap-account-web1:
          snap.account:
            - name: web1.example.com
    """
    ret = _ret(name)
    try:
        fleet = __salt__["snap.server_fleet"]()
        srv = __salt__["snap.server_settings"]()
    except CommandExecutionError as exc:
        return _fail(ret, str(exc))
    key = fleet["accepted"].get(name)
    keyfile = os.path.join(srv["authorized_keys_dir"], key["account"]) if key else None
    try:
        made = __salt__["snap.ensure_account"](name)
    except CommandExecutionError as exc:
        if keyfile and os.path.lexists(keyfile) and not __salt__["snap.account_complete"](name):
            # Half an account is no account: its key goes.
            if not __opts__["test"]:
                os.unlink(keyfile)
            ret["changes"]["authorized_key"] = {"old": keyfile, "new": None}
        return _fail(ret, str(exc))
    ret["changes"].update(made["changes"])
    command = f"/usr/bin/sudo -n {srv['receive']} {srv['config']}"
    line = f'restrict,command="{command}" {key["line"]} snap:{name}\n'
    if __salt__["snap.write_root_file"](keyfile, line, "0644"):
        ret["changes"]["authorized_key"] = {"old": None, "new": keyfile}
    if ret["changes"] and __opts__["test"]:
        ret["result"] = None
    verb = "would be changed" if ret["result"] is None else ("changed" if ret["changes"] else "in place")
    ret["comment"] = f"Push account {made['account']} of {name} ({key['fingerprint']}), jail {made['jail']}: {verb}"
    return ret


def accounts_made(name):
    """
    Make the fleet's new push accounts (group ``name``) in one pass of the
    account tables before the per-server ``snap.account`` states complete
    them (``snap.make_accounts``). A fleet of 10,000 new servers gets its
    users in seconds, where one ``useradd`` each took 11 minutes. If this
    fails, each server's own state still makes its account alone; this state
    then fails with the reason.

    .. code-block:: yaml

        snap-accounts-made:
          snap.accounts_made:
            - name: snap-push
    """
    ret = _ret(name)
    try:
        res = __salt__["snap.make_accounts"]()
    except CommandExecutionError as exc:
        return _fail(ret, str(exc))
    if res["made"]:
        ret["changes"]["users"] = {"old": None, "new": res["made"]}
    if res["error"]:
        return _fail(
            ret,
            f"{len(res['made'])} of {res['planned']} new push accounts made at once; {res['error']}. "
            "The rest are made one by one by their own snap.account states.",
        )
    if __opts__["test"] and res["made"]:
        ret["result"] = None
        ret["comment"] = f"{len(res['made'])} new push accounts would be made at once"
    elif res["made"]:
        ret["comment"] = f"{len(res['made'])} new push accounts made at once (group {name})"
    else:
        ret["comment"] = f"No new push accounts to make at once ({res['planned']} new)"
    return ret


def retired(name):
    """
    Lock the push accounts (members of group ``name``) whose server is no
    longer in the mine: no login (key removed, shell nologin, account
    expired), data kept. Accounts listed in pillar ``snap:server:purge`` are
    deleted with their jails instead. Nothing is deleted silently.

    .. code-block:: yaml

        snap-retired:
          snap.retired:
            - name: snap-push
    """
    ret = _ret(name)
    try:
        present = set(__salt__["snap.fleet_account_names"]())
        srv = __salt__["snap.settings"]()["server"]
    except CommandExecutionError as exc:
        return _fail(ret, str(exc))
    accounts = __salt__["snap.push_account_info"]()
    purge = set(srv.get("purge") or [])
    notes = []
    for acct in sorted(set(accounts) - present):
        keyfile = os.path.join(srv["authorized_keys_dir"], acct)
        info = accounts[acct]
        jail = info.get("home") or "?"
        if acct in purge:
            _merge(ret, acct, __states__["user.absent"](name=acct))
            _merge(ret, f"{acct} key", __states__["file.absent"](name=keyfile))
            try:
                removed = __salt__["snap.remove_jail"](acct)
            except CommandExecutionError as exc:
                ret["result"] = False
                notes.append(f"{acct}: cannot remove its jail: {exc}")
                continue
            if removed:
                ret["changes"].setdefault(acct, {})["jail"] = {"old": removed, "new": None}
            notes.append(f"{acct}: deleted with its jail {jail} (pillar snap:server:purge)")
            continue
        changes = {}
        if os.path.exists(keyfile):
            changes["authorized_key"] = {"old": keyfile, "new": None}
        if info.get("shell") != "/usr/sbin/nologin":
            changes["shell"] = {"old": info.get("shell"), "new": "/usr/sbin/nologin"}
        if info.get("expire") != "1":
            changes["expire"] = {"old": info.get("expire") or None, "new": 1}
        notes.append(
            f"{acct} ({info.get('comment', '')}): server gone from the mine; account locked, data kept "
            f"in {jail}; add it to pillar snap:server:purge to delete it"
        )
        if not changes:
            continue
        ret["changes"][acct] = changes
        if __opts__["test"]:
            ret["result"] = None
            continue
        try:
            if "authorized_key" in changes:
                __salt__["file.remove"](keyfile)
            if "shell" in changes:
                __salt__["user.chshell"](acct, "/usr/sbin/nologin")
            if "expire" in changes:
                __salt__["shadow.set_expire"](acct, 1)
        except CommandExecutionError as exc:
            ret["result"] = False
            notes.append(f"{acct}: cannot lock: {exc}")
    summary = "No retired push accounts" if not notes else "Retired push accounts:\n" + "\n".join(notes)
    return _finish(ret, summary)


def accounts_published(name="snap.accounts"):
    """
    Publish the backup server's account names (``snap.accounts``) through
    the mine now, when they differ from what the mine holds, so servers learn
    their account on their next highstate rather than at the next
    ``mine_interval``.

    .. code-block:: yaml

        snap-accounts-published:
          snap.accounts_published
    """
    ret = _ret(name)
    try:
        wanted = __salt__["snap.accounts"]()
    except CommandExecutionError as exc:
        return _fail(ret, str(exc))
    me = __opts__["id"]
    held = (__salt__["mine.get"](me, name) or {}).get(me)
    if held == wanted:
        ret["comment"] = f"{len(wanted)} account name(s) published in the mine ({name})"
        return ret
    old, new = set((held or {}).items()), set(wanted.items())
    ret["changes"] = {"published": {"added": len(new - old), "removed": len(old - new)}}
    if __opts__["test"]:
        ret.update(result=None, comment=f"Account names would be published in the mine ({name})")
        return ret
    if not __salt__["mine.send"](name):
        return _fail(ret, f"mine.send {name} failed")
    ret["comment"] = f"{len(wanted)} account name(s) published in the mine ({name})"
    return ret


def server_config(name):
    """
    Write the backup server's configuration (JSON, ``name``) and the
    rsnapshot configuration it refers to, from pillar and the accepted fleet.

    .. code-block:: yaml

        /etc/snap/server.json:
          snap.server_config
    """
    ret = _ret(name)
    try:
        config = __salt__["snap.server_config"]()
        conf_text = __salt__["snap.rsnapshot_conf"]()
    except CommandExecutionError as exc:
        return _fail(ret, f"Backup server configuration is invalid: {exc}")
    _merge(ret, "config", _file(name, json.dumps(config, indent=2, sort_keys=True) + "\n", "0600"))
    _merge(ret, "rsnapshot", _file(config["rsnapshot_conf"], conf_text, "0600"))
    servers = ", ".join(sorted(config["accounts"].values())) or "none yet"
    return _finish(ret, f"Backup server configuration {name}; history of: {servers}")


def archive_config(name):
    """
    Write the backup server's archive configuration (JSON, ``name``) from
    pillar ``snap:archive``, and the recipient public keys given there as
    armored text. Every key is checked by the core first: secret key material
    is refused and never written anywhere.

    .. code-block:: yaml

        /etc/snap/archive.json:
          snap.archive_config
    """
    ret = _ret(name)
    try:
        arc = __salt__["snap.settings"]()["archive"]
        texts = [r for r in (arc.get("recipients") or []) if isinstance(r, str) and r.lstrip().startswith("-----BEGIN")]
        for i, text in enumerate(arc.get("recipients") or []):
            if text in texts:
                __salt__["snap.check_recipient"](text, f"pillar snap:archive:recipients[{i}]")
        config = __salt__["snap.archive_config"]()
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, f"Archive configuration is invalid: {exc}")
    for i, item in enumerate(arc.get("recipients") or []):
        if item in texts:
            path = os.path.join(arc["recipients_dir"], f"recipient-{i}.asc")
            _merge(ret, f"recipient {i}", _file(path, item.strip() + "\n", "0644"))
    _merge(ret, "config", _file(name, json.dumps(config, indent=2, sort_keys=True) + "\n", "0600"))
    target = config["target"].get("bucket") or config["target"].get("vault")
    return _finish(ret, f"Archive configuration {name}: to {target}, {len(config['recipients'])} recipient(s)")


# -- off-site provisioning --------------------------------------------------------


def _missing(name):
    return {
        "name": name,
        "result": False,
        "changes": {},
        "comment": f"snap_core.provision is not importable here: {IMPORT_ERROR}",
    }


def offsite_present(name, **settings):
    """
    Ensure the off-site storage described by pillar ``snap:offsite`` exists
    and is locked down: the bucket ``name`` (versioning, Object Lock with a
    COMPLIANCE default retention of ``retain_days`` >= 90, public access
    blocked, encryption at rest, lifecycle to ``storage_class``, a bucket
    policy denying every destructive or reconfiguring call to all but
    ``admins``) or, for ``kind: glacier``, the existing vault ``name``'s
    access policy and optional vault lock; and the backup server's put-only
    identity.

    Arguments given here override the pillar's (same keys as
    ``snap:offsite``). Run it with an administrator's AWS identity, never on
    the backup server. With ``test=True`` the comment and ``changes`` show
    the exact JSON that would be applied. A step that would weaken the lock or
    a policy is refused (the state fails, nothing is applied, the comment
    says why); irreversible steps need
    ``confirm_irreversible: I understand COMPLIANCE cannot be undone``.

    name
        The bucket (or vault) name; must match ``snap:offsite:bucket`` when
        that is set.

    .. code-block:: yaml

        acme-snap-offsite:
          snap.offsite_present:
            - retain_days: 120
    """
    if not HAS_CORE:
        return _missing(name)
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    offsite = dict(__salt__["pillar.get"]("snap:offsite", {}) or {})
    chain_age = __salt__["pillar.get"]("snap:archive:chain:max_age_days", None)
    if chain_age is not None:
        offsite.setdefault("chain_max_age_days", chain_age)
    offsite.update(settings)
    # Whether the backup server makes chains, which the cap on retention must
    # leave room for: decided as the archive run and salt-run snap.provision do.
    try:
        chain_notes = snap_chains.provisioning_chains(
            offsite, __salt__["pillar.get"]("snap:archive", None), "this minion's pillar"
        )
    except ValueError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    key = "vault" if str(offsite.get("kind", "s3")).lower() in ("glacier", "glacier-vault", "vault") and offsite.get("vault") else "bucket"
    if offsite.get(key) and offsite[key] != name:
        ret.update(result=False, comment=f"state name {name} is not snap:offsite:{key} ({offsite[key]})")
        return ret
    offsite[key] = name
    try:
        out = snap_provision.provision(offsite, test=bool(__opts__["test"]))
    except snap_provision.ProvisionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    lines = [out["comment"]]
    for label, items in (("notes", out["notes"] + chain_notes), ("refused", out["refused"]), ("problems", out["problems"])):
        lines += [f"{label}: {item}" for item in items]
    if __opts__["test"] and out["plan"]:
        lines.append("would apply:")
        for step in out["plan"]:
            lines.append(f"- {step['action']}:\n{snap_provision._policy_text(step['new'])}")
    ret.update(result=out["result"], changes=out["changes"], comment="\n".join(lines))
    return ret


def offsite_credentials(
    name,
    profile="snap",
    config_file=None,
    access_key_id=None,
    secret_access_key=None,
    session_token=None,
    role_arn=None,
    credential_source=None,
    web_identity_token_file=None,
    roles_anywhere=None,
    region=None,
    user="root",
    group="root",
):
    """
    Write the AWS profile the backup server's upload pipeline uses: the shared
    credentials file ``name`` and the config file ``config_file`` (default:
    ``config`` beside ``name``), both mode 0600, owned by ``user``:``group``.
    Point the pipeline's ``snap:offsite`` settings ``credentials_file``,
    ``config_file`` and ``profile`` at them.

    Secrets are never plaintext in pillar: any value may be an ``sdb://``
    URI, resolved here with ``sdb.get`` (a plaintext ``secret_access_key`` is
    refused). Choose one source:

    - static keys of the put-only IAM user (``access_key_id`` and
      ``secret_access_key``, from sdb);
    - a role to assume: ``role_arn`` plus the keys above (they become the
      source profile ``<profile>-source``), or ``credential_source``
      (``Ec2InstanceMetadata``) or ``web_identity_token_file``;
    - IAM Roles Anywhere, with no static key: ``roles_anywhere`` with
      ``certificate``, ``private_key``, ``trust_anchor_arn``, ``profile_arn``,
      ``role_arn`` (and ``helper``, default ``/usr/local/bin/aws_signing_helper``);
    - nothing: only ``region`` (an EC2 instance profile needs no file).

    ``changes`` show digests of the files, never their content.

    .. code-block:: yaml

        /etc/snap/aws/credentials:
          snap.offsite_credentials:
            - profile: snap
            - region: eu-central-1
            - access_key_id: sdb://snapsecrets/aws_access_key_id
            - secret_access_key: sdb://snapsecrets/aws_secret_access_key
    """
    if not HAS_CORE:
        return _missing(name)
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    config_file = config_file or os.path.join(os.path.dirname(name), "config")
    raw = {
        "access_key_id": access_key_id,
        "secret_access_key": secret_access_key,
        "session_token": session_token,
        "role_arn": role_arn,
        "credential_source": credential_source,
        "web_identity_token_file": web_identity_token_file,
        "roles_anywhere": roles_anywhere,
        "region": region,
    }
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        resolved = snap_provision.resolve_secrets(raw, lambda uri: __salt__["sdb.get"](uri))
        files = snap_provision.render_aws_files(profile, resolved)
        uid = __salt__["file.user_to_uid"](user)
        gid = __salt__["file.group_to_gid"](group)
    except snap_provision.ProvisionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    if uid == "" or gid == "":
        ret.update(result=False, comment=f"unknown user {user} or group {group}")
        return ret
    wanted = {name: files["credentials"], config_file: files["config"]}
    changes = {}
    for path, text in wanted.items():
        if text is None:
            if os.path.exists(path):
                changes[path] = {"old": "present (left alone: remove it by hand if unused)", "new": "not needed"}
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                old = handle.read()
            st = os.stat(path)
            mode_ok = (st.st_mode & 0o777) == 0o600 and (st.st_uid, st.st_gid) == (uid, gid)
        except FileNotFoundError:
            old, mode_ok = None, False
        if old == text and mode_ok:
            continue
        changes[path] = {"old": snap_provision.fingerprint(old), "new": snap_provision.fingerprint(text) + " (0600)"}
        if not __opts__["test"]:
            snap_provision.write_private(path, text, uid, gid)
    real = {k: v for k, v in changes.items() if v.get("new") != "not needed"}
    if not real:
        ret["comment"] = f"AWS profile {profile} is in place"
        if changes:
            ret["comment"] += f"; {next(iter(changes))} is present but not needed"
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes=real, comment=f"AWS profile {profile} would be written (mode 0600)")
    else:
        ret.update(changes=real, comment=f"AWS profile {profile} written (mode 0600)")
    return ret
