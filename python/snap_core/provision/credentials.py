"""The backup server's AWS profile: rendered from resolved settings,
written 0600, reported by digest."""

from __future__ import annotations

import configparser
import hashlib
import io
import os
import re
import tempfile
from typing import Any, Callable

from snap_core.provision.spec import ProvisionError

_SAFE_VALUE = re.compile(r"^[^\r\n\x00]*$")


def _ini(sections: dict[str, dict[str, str]]) -> str:
    parser = configparser.RawConfigParser()
    for section, values in sections.items():
        parser.add_section(section)
        for key, value in values.items():
            if value is None:
                continue
            value = str(value)
            if not _SAFE_VALUE.match(value) or value != value.strip():
                raise ProvisionError(f"AWS profile setting {key} contains a line break or surrounding spaces")
            parser.set(section, key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def render_aws_files(profile: str, settings: dict[str, Any]) -> dict[str, str | None]:
    """The AWS shared credentials and config files for the backup server's
    profile ``profile``, from already-resolved settings (no ``sdb://`` left):

    - static keys: ``access_key_id`` + ``secret_access_key`` (+ ``session_token``);
    - role assumption: ``role_arn`` with the keys above as source profile
      ``<profile>-source``, or with ``credential_source`` (Ec2InstanceMetadata,
      Environment) instead of keys;
    - web identity: ``role_arn`` + ``web_identity_token_file``;
    - IAM Roles Anywhere: ``roles_anywhere`` {certificate, private_key,
      trust_anchor_arn, profile_arn, role_arn, helper} -> ``credential_process``.

    Returns ``{"credentials": text or None, "config": text}``.
    """
    if not re.match(r"^[A-Za-z0-9_.-]+$", profile or ""):
        raise ProvisionError(f"AWS profile name {profile!r} is not valid")
    key_id, secret = settings.get("access_key_id"), settings.get("secret_access_key")
    if bool(key_id) != bool(secret):
        raise ProvisionError("an access key needs both access_key_id and secret_access_key")
    ra = settings.get("roles_anywhere")
    role_arn = settings.get("role_arn")
    config: dict[str, str | None] = {"region": settings.get("region")}
    creds: dict[str, dict[str, str]] = {}
    if ra:
        need = ("certificate", "private_key", "trust_anchor_arn", "profile_arn", "role_arn")
        missing = [k for k in need if not ra.get(k)]
        if missing:
            raise ProvisionError(f"roles_anywhere needs {', '.join(missing)}")
        if key_id:
            raise ProvisionError("roles_anywhere uses no static key: remove access_key_id/secret_access_key")
        helper = ra.get("helper", "/usr/local/bin/aws_signing_helper")
        parts = [helper, "credential-process"]
        for opt in ("certificate", "private_key", "trust_anchor_arn", "profile_arn", "role_arn"):
            val = str(ra[opt])
            if re.search(r"\s|[\"'\\]", val):
                raise ProvisionError(f"roles_anywhere:{opt} must not contain spaces or quotes")
            parts += [f"--{opt.replace('_', '-')}", val]
        config["credential_process"] = " ".join(parts)
    elif role_arn:
        config["role_arn"] = role_arn
        config["role_session_name"] = settings.get("role_session_name", "snap-backup")
        if settings.get("web_identity_token_file"):
            config["web_identity_token_file"] = settings["web_identity_token_file"]
        elif key_id:
            source = f"{profile}-source"
            config["source_profile"] = source
            creds[source] = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
        elif settings.get("credential_source"):
            if settings["credential_source"] not in ("Ec2InstanceMetadata", "Environment", "EcsContainer"):
                raise ProvisionError("credential_source must be Ec2InstanceMetadata, Environment or EcsContainer")
            config["credential_source"] = settings["credential_source"]
        else:
            raise ProvisionError("role_arn needs a source: access keys, credential_source or web_identity_token_file")
    elif key_id:
        creds[profile] = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
        if settings.get("session_token"):
            creds[profile]["aws_session_token"] = settings["session_token"]
    section = "default" if profile == "default" else f"profile {profile}"
    return {
        "credentials": _ini(creds) if creds else None,
        "config": _ini({section: config}),
    }


def resolve_secrets(settings: dict[str, Any], sdb_get: Callable[[str], Any] | None) -> dict[str, Any]:
    """Replace every ``sdb://...`` string (nested too) by ``sdb_get(uri)``.
    A plaintext secret key in ``settings`` is refused: secrets come from sdb
    or from the AWS chain, never from pillar."""
    if settings.get("secret_access_key") and not str(settings["secret_access_key"]).startswith("sdb://"):
        raise ProvisionError(
            "secret_access_key is plaintext in pillar; put it in an sdb backend and give its sdb:// URI"
        )

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and value.startswith("sdb://"):
            if sdb_get is None:
                raise ProvisionError(f"{value}: no sdb resolver here")
            got = sdb_get(value)
            if got in (None, "", value):
                raise ProvisionError(f"{value}: the sdb backend returned nothing")
            return got
        return value

    return walk(settings)


def write_private(path: str, text: str, uid: int = 0, gid: int = 0) -> bool:
    """Write ``text`` to ``path`` atomically with mode 0600 (directory 0700 if
    created). Returns False if the file already had exactly this content,
    mode and owner (nothing written)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text and (st.st_mode & 0o777) == 0o600 and (st.st_uid, st.st_gid) == (uid, gid):
                return False
    except FileNotFoundError:
        pass
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".snap-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def fingerprint(text: str | None) -> str | None:
    """A short digest of a secret-bearing file, for change reports."""
    return None if text is None else "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
