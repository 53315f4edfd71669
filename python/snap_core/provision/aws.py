"""The administrator's AWS clients and reading the current configuration
back (bucket, identity policies), with the comparison rules."""

from __future__ import annotations

import json
import re

from snap_core.provision.compare import _read_json_policy
from snap_core.provision.spec import IDENTITY_POLICY_NAME, OffsiteSpec, ProvisionError


def _boto3():
    try:
        import boto3  # noqa: PLC0415
        import botocore  # noqa: PLC0415,F401
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise ProvisionError(
            "off-site provisioning needs boto3 on the machine that runs it (the Salt master has it "
            f"when Salt's AWS modules work; otherwise: pip install boto3): {exc}"
        ) from exc
    return boto3


class Aws:
    """The administrator's clients for one spec."""

    def __init__(self, spec: OffsiteSpec, session=None):
        boto3 = _boto3()
        from botocore.config import Config  # noqa: PLC0415

        self.spec = spec
        self.session = session or boto3.session.Session(profile_name=spec.admin_profile, region_name=spec.region)
        self.region = spec.region or self.session.region_name or "us-east-1"
        s3_config = (
            Config(s3={"addressing_style": "path"})
            if (spec.force_path_style or (spec.force_path_style is None and spec.endpoint_url))
            else None
        )
        kw = {"region_name": self.region}
        if spec.endpoint_url:
            kw["endpoint_url"] = spec.endpoint_url
        self.s3 = self.session.client("s3", config=s3_config, **kw)
        self.iam = self.session.client("iam", **kw)
        self.sts = self.session.client("sts", **kw)
        self.glacier = self.session.client("glacier", **kw) if spec.kind == "glacier" else None
        self._caller = None

    def caller_arn(self) -> str:
        if self._caller is None:
            ident = self.sts.get_caller_identity()
            self._caller = ident["Arn"]
            if not self.spec.account_id:
                self.spec.account_id = ident["Account"]
            if not self.spec.region:
                self.spec.region = self.region
        return self._caller


def principal_of(arn: str) -> str:
    """The ``aws:PrincipalArn`` of a caller ARN: an assumed-role session is
    its role (``arn:aws:sts::1:assumed-role/R/s`` -> ``arn:aws:iam::1:role/R``;
    role paths are not in the session ARN, so a role with a path needs its
    full ARN in snap:offsite:admins)."""
    m = re.match(r"^arn:([^:]+):sts::(\d+):assumed-role/([^/]+)/.+$", arn)
    if m:
        return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}"
    return arn


def _code(exc) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def read_s3(s3, b: str, aws: bool = True) -> dict:
    """The bucket's current configuration (absent parts as empty values).
    ``aws=False``: no ownership controls or encryption (Ceph RGW 16 has neither)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    def read(call, key, missing, default):
        try:
            out = call(Bucket=b)
            return out.get(key, default) if key else out
        except ClientError as exc:
            if _code(exc) in missing:
                return default
            raise

    versioning = read(s3.get_bucket_versioning, None, (), {})
    versioning = {k: v for k, v in versioning.items() if k in ("Status", "MFADelete")}
    lock = read(
        s3.get_object_lock_configuration, "ObjectLockConfiguration", ("ObjectLockConfigurationNotFoundError",), {}
    )
    pab = read(
        s3.get_public_access_block, "PublicAccessBlockConfiguration", ("NoSuchPublicAccessBlockConfiguration",), {}
    )
    enc = ownership = {}
    if aws:
        enc = read(
            s3.get_bucket_encryption,
            "ServerSideEncryptionConfiguration",
            ("ServerSideEncryptionConfigurationNotFoundError",),
            {},
        )
        ownership = read(s3.get_bucket_ownership_controls, "OwnershipControls", ("OwnershipControlsNotFoundError",), {})
    lifecycle = read(s3.get_bucket_lifecycle_configuration, "Rules", ("NoSuchLifecycleConfiguration",), [])
    policy = read(s3.get_bucket_policy, "Policy", ("NoSuchBucketPolicy",), None)
    return {
        "versioning": versioning,
        "lock": lock,
        "pab": pab,
        "enc": enc,
        "lifecycle": lifecycle,
        "policy": _read_json_policy(policy),
        "ownership": ownership,
    }


def identity_extra_policies(iam, kind: str, name: str) -> dict[str, dict | None]:
    """Policies on the backup identity besides snap's inline one, by label,
    with their documents where they can be read."""
    from urllib.parse import unquote  # noqa: PLC0415

    out: dict[str, dict | None] = {}
    if kind == "user":
        inline = iam.list_user_policies(UserName=name)["PolicyNames"]
        attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
        for group in iam.list_groups_for_user(UserName=name)["Groups"]:
            out[f"group {group['GroupName']}"] = None
        get_inline = lambda p: iam.get_user_policy(UserName=name, PolicyName=p)["PolicyDocument"]  # noqa: E731
    else:
        inline = iam.list_role_policies(RoleName=name)["PolicyNames"]
        attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        get_inline = lambda p: iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]  # noqa: E731
    for pname in inline:
        if pname == IDENTITY_POLICY_NAME:
            continue
        doc = get_inline(pname)
        out[f"inline policy {pname}"] = json.loads(unquote(doc)) if isinstance(doc, str) else doc
    for att in attached:
        pol = iam.get_policy(PolicyArn=att["PolicyArn"])["Policy"]
        ver = iam.get_policy_version(PolicyArn=att["PolicyArn"], VersionId=pol["DefaultVersionId"])["PolicyVersion"]
        doc = ver["Document"]
        out[f"attached policy {att['PolicyArn']}"] = json.loads(unquote(doc)) if isinstance(doc, str) else doc
    return out
