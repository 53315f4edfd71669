"""
State functions for off-site provisioning, to be merged into ``_states/snap.py``.

Written as if they were in the ``snap`` state module: at merge, paste the
imports below next to snap.py's and the functions after the others. Until
then this file loads on its own as the state module ``snap_provision_part``
(the tests call it that way through Salt's loader).

- ``snap.offsite_present`` runs where the administrator's AWS identity is:
  the master (``salt-run state.orchestrate snap.offsite.provision``) or an
  admin workstation (``salt-call --local``), never the backup server.
- ``snap.offsite_credentials`` runs on the backup server: it writes the AWS
  profile its upload pipeline uses (mode 0600), resolving ``sdb://`` secrets.

.. code-block:: yaml

    snap-offsite:
      snap.offsite_present:
        - name: acme-snap-offsite

    /etc/snap/aws/credentials:
      snap.offsite_credentials:
        - profile: snap
        - access_key_id: sdb://snapsecrets/aws_access_key_id
        - secret_access_key: sdb://snapsecrets/aws_secret_access_key
"""

import os

try:
    from snap_core import provision as snap_provision

    HAS_PROVISION = True
    PROVISION_IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover
    HAS_PROVISION = False
    PROVISION_IMPORT_ERROR = str(exc)


def _missing(name):
    return {
        "name": name,
        "result": False,
        "changes": {},
        "comment": f"snap_core.provision is not importable here: {PROVISION_IMPORT_ERROR}",
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
    if not HAS_PROVISION:
        return _missing(name)
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    offsite = dict(__salt__["pillar.get"]("snap:offsite", {}) or {})
    offsite.update(settings)
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
    for label, items in (("notes", out["notes"]), ("refused", out["refused"]), ("problems", out["problems"])):
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
    if not HAS_PROVISION:
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
