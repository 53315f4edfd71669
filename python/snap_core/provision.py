"""Off-site provisioning: the bucket (or vault), its lock, its lifecycle, and
the backup server's put-only identity.

Run by an administrator identity (the Salt master through ``salt-run
snap.provision`` or the state ``snap.offsite_present``), never by the backup
server. Everything here works from one *spec* (the pillar ``snap:offsite``,
see :func:`load_spec`) and one set of document builders: the policies that
:func:`provision` applies are the ones :func:`verify` reads back and compares,
the ones :func:`template` writes for CloudFormation, and the ones
:func:`check_policies` proves statically. There is no second copy.

Why Python and not Rust: the documents are plain data consumed only by
Python callers (boto3 on the master, Salt, the CLI, the tests); putting them
in the Rust crate would add a JSON round trip through PyO3 and a wheel rebuild
for each policy change, and give the backup server's binary code it must never
run. The one number both sides must agree on, the minimum retention, is read
from the core (``OFFSITE_MIN_RETAIN_DAYS``).

boto3 is imported lazily: a Salt master has it (Salt's own AWS modules need
it); anywhere else :func:`session` says how to get it.
"""

from __future__ import annotations

import configparser
import copy
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import tempfile
from typing import Any, Callable, Iterable

from snap_core import errors

try:  # the one number shared with the upload pipeline
    from snap_core._rust import OFFSITE_MIN_RETAIN_DAYS as MIN_RETAIN_DAYS
except ImportError:  # pragma: no cover - a core built before snap-offsite
    MIN_RETAIN_DAYS = 90

#: Longest retention accepted (the same bound as the upload pipeline's).
MAX_RETAIN_DAYS = 3650
#: What ``snap:offsite:confirm_irreversible`` must say, word for word, before
#: anything that cannot be undone happens (a bucket with Object Lock, a
#: COMPLIANCE default retention, a completed vault lock).
CONFIRM_PHRASE = "I understand COMPLIANCE cannot be undone"
#: Inline policy name on the backup identity.
IDENTITY_POLICY_NAME = "snap-offsite-put-only"
#: Storage classes an archive may go to.
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR")
#: Minimum storage duration AWS bills, per class (days).
MIN_STORAGE_DAYS = {"GLACIER": 90, "DEEP_ARCHIVE": 180, "GLACIER_IR": 90}

# What the upload pipeline (rust/snap-offsite, s3.rs) needs, and nothing more.
S3_OBJECT_ACTIONS_NEEDED = ("s3:PutObject", "s3:AbortMultipartUpload")
S3_BUCKET_ACTIONS_NEEDED = ("s3:ListBucket", "s3:ListBucketMultipartUploads")
GLACIER_ACTIONS_NEEDED = (
    "glacier:UploadArchive",
    "glacier:InitiateMultipartUpload",
    "glacier:UploadMultipartPart",
    "glacier:CompleteMultipartUpload",
    "glacier:AbortMultipartUpload",
    "glacier:ListMultipartUploads",
)

# What nobody but an administrator may do. Object-level actions apply to
# arn:...:bucket/*, bucket-level ones to arn:...:bucket.
S3_FORBIDDEN_OBJECT_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
)
S3_FORBIDDEN_BUCKET_ACTIONS = (
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:DeleteBucket",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutEncryptionConfiguration",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketAcl",
    "s3:PutReplicationConfiguration",
)
# Reads the backup server never needs (it cannot read back what it wrote).
S3_FORBIDDEN_READS = ("s3:GetObject", "s3:GetObjectVersion", "s3:RestoreObject")
GLACIER_FORBIDDEN_ACTIONS = (
    "glacier:DeleteArchive",
    "glacier:DeleteVault",
    "glacier:DeleteVaultAccessPolicy",
    "glacier:SetVaultAccessPolicy",
    "glacier:InitiateVaultLock",
    "glacier:AbortVaultLock",
    "glacier:CompleteVaultLock",
    "glacier:DeleteVaultNotifications",
    "glacier:SetVaultNotifications",
)
GLACIER_FORBIDDEN_READS = ("glacier:InitiateJob", "glacier:GetJobOutput")


class ProvisionError(errors.InvalidInput):
    """The off-site settings are wrong, or a step was refused; the message says why."""


class OffsiteDrift(errors.Error):
    """The off-site configuration read back differs from the policy."""


# -- the spec -----------------------------------------------------------------


@dataclasses.dataclass
class IdentitySpec:
    """The backup server's identity: an IAM user, or a role it assumes."""

    type: str = "user"  # "user" | "role"
    name: str = "snap-backup"
    path: str = "/snap/"
    # Role only: who may assume it.
    assume_from: list[str] = dataclasses.field(default_factory=list)
    instance_profile: bool = False
    roles_anywhere: dict[str, Any] | None = None
    web_identity: dict[str, Any] | None = None
    max_session_hours: int = 1


@dataclasses.dataclass
class OffsiteSpec:
    """Everything provisioning needs, validated (see :func:`load_spec`)."""

    kind: str
    bucket: str
    prefix: str = "snap"
    region: str | None = None
    endpoint_url: str | None = None
    force_path_style: bool | None = None
    partition: str = "aws"
    retain_days: int = MIN_RETAIN_DAYS
    storage_class: str = "GLACIER"
    transition_days: int = 0
    archive_min_size: int = 1024 * 1024
    noncurrent_expire_days: int | None = None
    expire_days: int | None = None
    abort_incomplete_days: int = 7
    encryption: str = "AES256"
    kms_key_id: str | None = None
    admins: list[str] = dataclasses.field(default_factory=list)
    admin_profile: str | None = None
    identity: IdentitySpec = dataclasses.field(default_factory=IdentitySpec)
    confirm_irreversible: str | None = None
    vault_lock: bool = False
    vault_lock_complete_id: str | None = None
    account_id: str | None = None

    @property
    def confirmed(self) -> bool:
        return self.confirm_irreversible == CONFIRM_PHRASE

    @property
    def bucket_arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.bucket}"

    @property
    def objects_arn(self) -> str:
        return f"{self.bucket_arn}/*"

    @property
    def prefix_arn(self) -> str:
        return f"{self.bucket_arn}/{self.prefix}/*"

    def vault_arn(self) -> str:
        if not (self.region and self.account_id):
            raise ProvisionError(f"vault {self.bucket}: its ARN needs the region and the account id")
        return f"arn:{self.partition}:glacier:{self.region}:{self.account_id}:vaults/{self.bucket}"

    def identity_arn(self) -> str:
        if not self.account_id:
            raise ProvisionError("the backup identity's ARN needs the account id")
        kind = "user" if self.identity.type == "user" else "role"
        return f"arn:{self.partition}:iam::{self.account_id}:{kind}{self.identity.path}{self.identity.name}"


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VAULT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
_IAM_NAME_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
_ARN_RE = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}|\*)?:.+$")
_SPEC_KEYS = {f.name for f in dataclasses.fields(OffsiteSpec)} | {
    "vault",
    "profile",
    "credentials_file",
    "config_file",
    "credentials",
    "part_size",
    "max_in_flight",
    "sdk_max_attempts",
    "part_retries",
    "retry_backoff",
    "connect_timeout",
}


def _int(settings: dict, key: str, default: int | None) -> int | None:
    value = settings.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ProvisionError(f"snap:offsite:{key} must be a whole number, not {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ProvisionError(f"snap:offsite:{key} must be a whole number, not {value!r}") from None


def load_spec(settings: dict[str, Any]) -> OffsiteSpec:
    """Validate the pillar ``snap:offsite`` (a dict) into an :class:`OffsiteSpec`.

    Raises :class:`ProvisionError` naming the key for anything that cannot
    work or would weaken the guarantee (retention below 90 days, noncurrent
    versions expiring before their lock ends, an unknown storage class).
    Keys the upload pipeline reads (profile, credentials_file, part_size...)
    are accepted and ignored here.
    """
    if not isinstance(settings, dict) or not settings:
        raise ProvisionError("snap:offsite is missing or not a mapping")
    unknown = sorted(set(settings) - _SPEC_KEYS)
    if unknown:
        raise ProvisionError(f"snap:offsite: unknown setting(s) {', '.join(unknown)}")
    kind = str(settings.get("kind", "s3")).lower()
    if kind in ("glacier-vault", "vault"):
        kind = "glacier"
    if kind not in ("s3", "glacier"):
        raise ProvisionError(f"snap:offsite:kind must be s3 or glacier, not {kind!r}")
    name = settings.get("vault") if kind == "glacier" and settings.get("vault") else settings.get("bucket")
    if not name or not isinstance(name, str):
        raise ProvisionError("snap:offsite:bucket (or vault for kind glacier) is required")
    if kind == "s3" and (not _NAME_RE.match(name) or ".." in name):
        raise ProvisionError(f"snap:offsite:bucket {name!r} is not a valid S3 bucket name")
    if kind == "glacier" and not _VAULT_RE.match(name):
        raise ProvisionError(f"snap:offsite:vault {name!r} is not a valid vault name")
    prefix = str(settings.get("prefix", "snap")).strip("/")
    if not prefix or any(seg in ("", ".", "..") for seg in prefix.split("/")) or re.search(r"[*?\s\"\\]", prefix):
        raise ProvisionError(
            f"snap:offsite:prefix {prefix!r} must be a non-empty key prefix without wildcards or spaces"
        )
    retain = _int(settings, "retain_days", MIN_RETAIN_DAYS)
    if retain < MIN_RETAIN_DAYS:
        raise ProvisionError(
            f"snap:offsite:retain_days is {retain}; off-site copies are kept at least {MIN_RETAIN_DAYS} days"
        )
    if retain > MAX_RETAIN_DAYS:
        raise ProvisionError(f"snap:offsite:retain_days {retain} is above the maximum of {MAX_RETAIN_DAYS}")
    storage_class = str(settings.get("storage_class", "GLACIER")).upper()
    if storage_class not in ARCHIVE_CLASSES:
        raise ProvisionError(
            f"snap:offsite:storage_class must be one of {', '.join(ARCHIVE_CLASSES)}, not {storage_class!r}"
        )
    transition = _int(settings, "transition_days", 0)
    if transition < 0:
        raise ProvisionError("snap:offsite:transition_days must be 0 (at once) or more")
    noncurrent = _int(settings, "noncurrent_expire_days", retain + 1)
    if noncurrent <= retain:
        raise ProvisionError(
            f"snap:offsite:noncurrent_expire_days ({noncurrent}) must be after the lock ends "
            f"(more than retain_days = {retain})"
        )
    expire = _int(settings, "expire_days", None)
    if expire is not None and expire <= retain:
        raise ProvisionError(
            f"snap:offsite:expire_days ({expire}) must be after the lock ends (more than retain_days = {retain})"
        )
    abort_days = _int(settings, "abort_incomplete_days", 7)
    if abort_days < 1:
        raise ProvisionError("snap:offsite:abort_incomplete_days must be at least 1")
    min_size = _int(settings, "archive_min_size", 1024 * 1024)
    if min_size < 0:
        raise ProvisionError("snap:offsite:archive_min_size must not be negative")
    encryption = str(settings.get("encryption", "AES256"))
    if encryption not in ("AES256", "aws:kms"):
        raise ProvisionError(f"snap:offsite:encryption must be AES256 or aws:kms, not {encryption!r}")
    kms_key_id = settings.get("kms_key_id")
    if encryption == "aws:kms" and not kms_key_id:
        raise ProvisionError("snap:offsite:encryption aws:kms needs snap:offsite:kms_key_id (a key ARN)")
    if kms_key_id and not str(kms_key_id).startswith("arn:"):
        raise ProvisionError("snap:offsite:kms_key_id must be a key ARN (the identity policy names it)")
    admins = settings.get("admins") or []
    if isinstance(admins, str):
        admins = [admins]
    for arn in admins:
        if not isinstance(arn, str) or not _ARN_RE.match(arn):
            raise ProvisionError(f"snap:offsite:admins: {arn!r} is not an IAM principal ARN")
        if arn.split(":", 5)[5] in ("*", "user/*", "role/*"):
            raise ProvisionError(
                f"snap:offsite:admins: {arn!r} would exempt every principal of the account, "
                "the backup server included"
            )
    identity = _identity_spec(settings.get("identity") or {})
    endpoint = settings.get("endpoint_url")
    if endpoint and not str(endpoint).startswith(("http://", "https://")):
        raise ProvisionError(f"snap:offsite:endpoint_url {endpoint!r} must start with http:// or https://")
    vault_lock = settings.get("vault_lock") or {}
    if not isinstance(vault_lock, dict):
        raise ProvisionError("snap:offsite:vault_lock must be a mapping (enabled, complete_lock_id)")
    if vault_lock and kind != "glacier":
        raise ProvisionError("snap:offsite:vault_lock applies to kind glacier only")
    partition = str(settings.get("partition", "aws"))
    if partition not in ("aws", "aws-cn", "aws-us-gov"):
        raise ProvisionError(f"snap:offsite:partition {partition!r} is not an AWS partition")
    return OffsiteSpec(
        kind=kind,
        bucket=name,
        prefix=prefix,
        region=settings.get("region"),
        endpoint_url=endpoint,
        force_path_style=settings.get("force_path_style"),
        partition=partition,
        retain_days=retain,
        storage_class=storage_class,
        transition_days=transition,
        archive_min_size=min_size,
        noncurrent_expire_days=noncurrent,
        expire_days=expire,
        abort_incomplete_days=abort_days,
        encryption=encryption,
        kms_key_id=kms_key_id,
        admins=list(admins),
        admin_profile=settings.get("admin_profile"),
        identity=identity,
        confirm_irreversible=settings.get("confirm_irreversible"),
        vault_lock=bool(vault_lock.get("enabled", False)),
        vault_lock_complete_id=vault_lock.get("complete_lock_id"),
        account_id=settings.get("account_id"),
    )


def _identity_spec(raw: dict) -> IdentitySpec:
    if not isinstance(raw, dict):
        raise ProvisionError("snap:offsite:identity must be a mapping")
    known = {f.name for f in dataclasses.fields(IdentitySpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ProvisionError(f"snap:offsite:identity: unknown setting(s) {', '.join(unknown)}")
    spec = IdentitySpec(**{k: v for k, v in raw.items() if v is not None})
    if spec.type not in ("user", "role"):
        raise ProvisionError(f"snap:offsite:identity:type must be user or role, not {spec.type!r}")
    if not _IAM_NAME_RE.match(spec.name or ""):
        raise ProvisionError(f"snap:offsite:identity:name {spec.name!r} is not a valid IAM name")
    if not (spec.path.startswith("/") and spec.path.endswith("/")):
        raise ProvisionError(f"snap:offsite:identity:path {spec.path!r} must start and end with /")
    if isinstance(spec.assume_from, str):
        spec.assume_from = [spec.assume_from]
    if spec.type == "user" and (spec.assume_from or spec.instance_profile or spec.roles_anywhere or spec.web_identity):
        raise ProvisionError(
            "snap:offsite:identity: assume_from, instance_profile, roles_anywhere and web_identity are for type role"
        )
    if spec.type == "role" and not (spec.assume_from or spec.instance_profile or spec.roles_anywhere or spec.web_identity):
        raise ProvisionError(
            "snap:offsite:identity: a role needs someone to assume it: assume_from, instance_profile, "
            "roles_anywhere or web_identity"
        )
    if spec.roles_anywhere is not None and not (spec.roles_anywhere or {}).get("trust_anchor_arn"):
        raise ProvisionError("snap:offsite:identity:roles_anywhere needs trust_anchor_arn")
    if spec.web_identity is not None and not (spec.web_identity or {}).get("provider_arn"):
        raise ProvisionError("snap:offsite:identity:web_identity needs provider_arn")
    if not 1 <= int(spec.max_session_hours) <= 12:
        raise ProvisionError("snap:offsite:identity:max_session_hours must be 1..12")
    return spec


# -- the documents (the single source) ---------------------------------------


def _admin_exempt(spec: OffsiteSpec) -> dict:
    """The condition that exempts the administrator principals from a deny."""
    if not spec.admins:
        raise ProvisionError("no administrator principal: set snap:offsite:admins (ARNs)")
    return {"ArnNotLike": {"aws:PrincipalArn": sorted(spec.admins)}}


def bucket_policy(spec: OffsiteSpec) -> dict:
    """The bucket policy: everyone but the administrators is denied every way
    of destroying, shortening or reconfiguring, and uploads that would carry a
    weaker lock than the bucket's or replace an existing key.

    A PutObject *without* lock headers is not denied: UploadPart and
    CompleteMultipartUpload never carry them, and a condition on their absence
    would refuse every multipart upload. Such an object gets the bucket's
    default retention (COMPLIANCE, retain_days), which only an administrator
    can change.
    """
    exempt = _admin_exempt(spec)
    objects, bucket = spec.objects_arn, spec.bucket_arn

    def deny(sid, actions, resource, condition=None):
        cond = copy.deepcopy(exempt)
        for op, values in (condition or {}).items():
            cond.setdefault(op, {}).update(values)
        return {
            "Sid": sid,
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": sorted(actions),
            "Resource": resource,
            "Condition": cond,
        }

    return {
        "Version": "2012-10-17",
        "Statement": [
            deny("SnapDenyObjectDestruction", S3_FORBIDDEN_OBJECT_ACTIONS, objects),
            deny("SnapDenyBucketReconfiguration", S3_FORBIDDEN_BUCKET_ACTIONS, bucket),
            deny(
                "SnapDenyWeakerLockMode",
                ["s3:PutObject"],
                objects,
                {"Null": {"s3:object-lock-mode": "false"}, "StringNotEquals": {"s3:object-lock-mode": "COMPLIANCE"}},
            ),
            deny(
                "SnapDenyShorterRetention",
                ["s3:PutObject"],
                objects,
                {"NumericLessThan": {"s3:object-lock-remaining-retention-days": str(spec.retain_days)}},
            ),
            deny(
                "SnapDenyReplacingObjects",
                ["s3:PutObject"],
                objects,
                {"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}},
            ),
            {
                "Sid": "SnapDenyInsecureTransport",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": ["s3:*"],
                "Resource": [bucket, objects],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


def identity_policy(spec: OffsiteSpec) -> dict:
    """The backup server's own policy: create objects and multipart uploads
    under its prefix, abort its incomplete uploads, list its prefix; and an
    explicit deny of everything destructive, so a broader policy attached by
    mistake later still cannot give it that."""
    if spec.kind == "glacier":
        vault = spec.vault_arn()
        return {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "SnapUploadArchives", "Effect": "Allow", "Action": sorted(GLACIER_ACTIONS_NEEDED), "Resource": vault},
                {
                    "Sid": "SnapDenyDestruction",
                    "Effect": "Deny",
                    "Action": sorted(GLACIER_FORBIDDEN_ACTIONS + GLACIER_FORBIDDEN_READS),
                    "Resource": vault,
                },
            ],
        }
    statements = [
        {
            "Sid": "SnapPutArchives",
            "Effect": "Allow",
            "Action": sorted(S3_OBJECT_ACTIONS_NEEDED),
            "Resource": spec.prefix_arn,
        },
        {
            "Sid": "SnapListOwnPrefix",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": spec.bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [spec.prefix, f"{spec.prefix}/*"]}},
        },
        {
            "Sid": "SnapListIncompleteUploads",
            "Effect": "Allow",
            "Action": ["s3:ListBucketMultipartUploads"],
            "Resource": spec.bucket_arn,
        },
        {
            "Sid": "SnapDenyDestruction",
            "Effect": "Deny",
            "Action": sorted(S3_FORBIDDEN_OBJECT_ACTIONS + S3_FORBIDDEN_BUCKET_ACTIONS + S3_FORBIDDEN_READS),
            "Resource": [spec.bucket_arn, spec.objects_arn],
        },
    ]
    if spec.encryption == "aws:kms":
        statements.insert(
            3,
            {
                "Sid": "SnapEncryptWithBucketKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": spec.kms_key_id,
                "Condition": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}},
            },
        )
    return {"Version": "2012-10-17", "Statement": statements}


def trust_policy(spec: OffsiteSpec) -> dict | None:
    """Who may assume the backup role (None for a user)."""
    ident = spec.identity
    if ident.type != "role":
        return None
    statements = []
    if ident.assume_from:
        statements.append(
            {
                "Sid": "SnapAssumeFrom",
                "Effect": "Allow",
                "Principal": {"AWS": sorted(ident.assume_from)},
                "Action": "sts:AssumeRole",
            }
        )
    if ident.instance_profile:
        statements.append(
            {
                "Sid": "SnapEc2InstanceProfile",
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        )
    if ident.roles_anywhere:
        ra = ident.roles_anywhere
        cond: dict = {"ArnEquals": {"aws:SourceArn": ra["trust_anchor_arn"]}}
        if ra.get("subject_cn"):
            cond["StringEquals"] = {"aws:PrincipalTag/x509Subject/CN": ra["subject_cn"]}
        statements.append(
            {
                "Sid": "SnapRolesAnywhere",
                "Effect": "Allow",
                "Principal": {"Service": "rolesanywhere.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
                "Condition": cond,
            }
        )
    if ident.web_identity:
        wi = ident.web_identity
        st = {
            "Sid": "SnapWebIdentity",
            "Effect": "Allow",
            "Principal": {"Federated": wi["provider_arn"]},
            "Action": "sts:AssumeRoleWithWebIdentity",
        }
        if wi.get("conditions"):
            st["Condition"] = wi["conditions"]
        statements.append(st)
    return {"Version": "2012-10-17", "Statement": statements}


def vault_access_policy(spec: OffsiteSpec) -> dict:
    """The vault's access policy: nobody but the administrators may delete or
    change the vault, its policies, its lock or its notifications."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SnapDenyVaultDestruction",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": sorted(GLACIER_FORBIDDEN_ACTIONS),
                "Resource": spec.vault_arn(),
                "Condition": _admin_exempt(spec),
            }
        ],
    }


def vault_lock_policy(spec: OffsiteSpec) -> dict:
    """The vault lock policy: nobody, administrators included, deletes an
    archive younger than the retention. Once completed it never changes."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SnapDenyEarlyDelete",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "glacier:DeleteArchive",
                "Resource": spec.vault_arn(),
                "Condition": {"NumericLessThan": {"glacier:ArchiveAgeInDays": str(spec.retain_days)}},
            }
        ],
    }


def lock_configuration(spec: OffsiteSpec) -> dict:
    return {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": spec.retain_days}},
    }


OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def encryption_configuration(spec: OffsiteSpec) -> dict:
    default: dict = {"SSEAlgorithm": spec.encryption}
    if spec.encryption == "aws:kms":
        default["KMSMasterKeyID"] = spec.kms_key_id
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": spec.encryption == "aws:kms"}]}


def lifecycle_configuration(spec: OffsiteSpec) -> dict:
    """Archives (objects above ``archive_min_size`` under the prefix; the
    small manifests stay readable) move to the Glacier class; noncurrent
    versions expire only after the lock; incomplete uploads are cleaned."""
    prefix = f"{spec.prefix}/"
    rules = [
        {
            "ID": "snap-archive-transition",
            "Status": "Enabled",
            "Filter": (
                {"And": {"Prefix": prefix, "ObjectSizeGreaterThan": spec.archive_min_size}}
                if spec.archive_min_size
                else {"Prefix": prefix}
            ),
            "Transitions": [{"Days": spec.transition_days, "StorageClass": spec.storage_class}],
        },
        {
            "ID": "snap-noncurrent-expiry",
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "NoncurrentVersionExpiration": {"NoncurrentDays": spec.noncurrent_expire_days},
        },
        {
            "ID": "snap-abort-incomplete-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": spec.abort_incomplete_days},
        },
    ]
    if spec.expire_days is not None:
        rules.append(
            {
                "ID": "snap-expire-after-lock",
                "Status": "Enabled",
                "Filter": {"Prefix": prefix},
                "Expiration": {"Days": spec.expire_days},
            }
        )
    return {"Rules": rules}


def documents(spec: OffsiteSpec) -> dict[str, Any]:
    """Every document provisioning would apply, by name (the exact JSON)."""
    docs: dict[str, Any] = {"identity_policy": identity_policy(spec)}
    trust = trust_policy(spec)
    if trust:
        docs["trust_policy"] = trust
    if spec.kind == "s3":
        docs.update(
            bucket_policy=bucket_policy(spec),
            object_lock=lock_configuration(spec),
            public_access_block=dict(PUBLIC_ACCESS_BLOCK),
            ownership_controls=copy.deepcopy(OWNERSHIP),
            encryption=encryption_configuration(spec),
            lifecycle=lifecycle_configuration(spec),
            versioning={"Status": "Enabled"},
        )
    else:
        docs["vault_access_policy"] = vault_access_policy(spec)
        if spec.vault_lock:
            docs["vault_lock_policy"] = vault_lock_policy(spec)
    return docs


# -- policy evaluation (the static checker) -----------------------------------


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    # IAM wildcards: * and ? only ([...] is literal).
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


_CONDITION_OPS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda want, have: want == have,
    "StringLike": lambda want, have: _glob(want, have),
    "ArnEquals": lambda want, have: want == have,
    "ArnLike": lambda want, have: _glob(want, have),
    "Bool": lambda want, have: str(want).lower() == str(have).lower(),
    "NumericLessThan": lambda want, have: float(have) < float(want),
    "NumericLessThanEquals": lambda want, have: float(have) <= float(want),
    "NumericGreaterThan": lambda want, have: float(have) > float(want),
    "NumericGreaterThanEquals": lambda want, have: float(have) >= float(want),
    "NumericEquals": lambda want, have: float(have) == float(want),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


def _condition_holds(condition: dict | None, context: dict[str, Any]) -> bool:
    """IAM condition semantics for single-valued keys: every operator and
    every key must hold; values of one key are ORed; a missing key makes a
    positive operator false, a negated one true, an ...IfExists one true;
    ``Null`` tests presence. An operator this checker does not know raises:
    it never guesses."""
    for op, keys in (condition or {}).items():
        base, if_exists = (op[:-8], True) if op.endswith("IfExists") else (op, False)
        if base != "Null" and base not in _NEGATED and base not in _CONDITION_OPS:
            raise ProvisionError(f"policy checker: condition operator {op} is not supported")
        for key, wanted in keys.items():
            wanted = [str(w) for w in _as_list(wanted)]
            present = key in context and context[key] is not None
            if base == "Null":
                if (not present) != (wanted[0].lower() == "true"):
                    return False
                continue
            if not present:
                if if_exists or base in _NEGATED:
                    continue
                return False
            have = str(context[key])
            if base in _NEGATED:
                if any(_CONDITION_OPS[_NEGATED[base]](w, have) for w in wanted):
                    return False
            elif not any(_CONDITION_OPS[base](w, have) for w in wanted):
                return False
    return True


def _statement_applies(st: dict, action: str, resource: str, context: dict, principal: str | None) -> bool:
    if "NotAction" in st or "NotResource" in st or "NotPrincipal" in st:
        raise ProvisionError(f"policy checker: statement {st.get('Sid')!r} uses Not* elements; snap never writes those")
    if not any(_glob(p, action, case=False) for p in _as_list(st.get("Action"))):
        return False
    if "Resource" in st and not any(_glob(p, resource) for p in _as_list(st["Resource"])):
        return False
    if principal is not None and "Principal" in st:
        p = st["Principal"]
        aws = p if p == "*" else (p.get("AWS") if isinstance(p, dict) else None)
        if aws is None:
            return False
        if aws != "*" and not any(a == "*" or _glob(a, principal) for a in _as_list(aws)):
            return False
    return _condition_holds(st.get("Condition"), context)


def evaluate(
    identity_docs: Iterable[dict],
    resource_docs: Iterable[dict],
    principal_arn: str,
    action: str,
    resource: str,
    context: dict[str, Any] | None = None,
) -> str:
    """Decide one request of a principal of the bucket's own account:
    ``"explicit-deny"``, ``"allow"`` or ``"implicit-deny"``. Same-account
    rules: an explicit deny anywhere wins; otherwise an allow in the identity
    policies or in the resource policy for this principal allows."""
    ctx = {"aws:PrincipalArn": principal_arn, "aws:SecureTransport": "true"}
    ctx.update(context or {})
    allowed = False
    for doc, principal in [(d, None) for d in identity_docs] + [(d, principal_arn) for d in resource_docs]:
        for st in _as_list(doc.get("Statement")):
            if _statement_applies(st, action, resource, ctx, principal):
                if st["Effect"] == "Deny":
                    return "explicit-deny"
                allowed = True
    return "allow" if allowed else "implicit-deny"


def pipeline_requests(spec: OffsiteSpec) -> list[tuple[str, str, str, dict]]:
    """What snap's upload pipeline sends, as (name, action, resource, context)."""
    if spec.kind == "glacier":
        return [(a.split(":")[1], a, spec.vault_arn(), {}) for a in GLACIER_ACTIONS_NEEDED]
    key = f"{spec.bucket_arn}/{spec.prefix}/2026/20260101T000000Z-0123456789abcdef.sqfs.gpg"
    lock = {"s3:object-lock-mode": "COMPLIANCE", "s3:object-lock-remaining-retention-days": str(spec.retain_days + 1)}
    return [
        ("PutObject (If-None-Match, COMPLIANCE)", "s3:PutObject", key,
         {**lock, "s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}),
        ("CreateMultipartUpload (COMPLIANCE)", "s3:PutObject", key, {**lock, "s3:ObjectCreationOperation": "false"}),
        ("UploadPart", "s3:PutObject", key, {"s3:ObjectCreationOperation": "false"}),
        ("CompleteMultipartUpload (If-None-Match)", "s3:PutObject", key,
         {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}),
        ("AbortMultipartUpload", "s3:AbortMultipartUpload", key, {}),
        ("ListObjectsV2 of its prefix", "s3:ListBucket", spec.bucket_arn, {"s3:prefix": f"{spec.prefix}/"}),
        ("ListMultipartUploads", "s3:ListBucketMultipartUploads", spec.bucket_arn, {}),
    ]


@dataclasses.dataclass(frozen=True)
class Forbidden:
    """A request the backup identity must never get.

    ``explicit``: refused by an explicit deny (no policy attached to the
    identity later can grant it), not merely not granted. ``everyone``: the
    resource policy refuses it to every principal that is not an
    administrator, even one whose own policy allows everything.
    """

    name: str
    action: str
    resource: str
    context: dict
    explicit: bool = True
    everyone: bool = True


def forbidden_requests(spec: OffsiteSpec) -> list[Forbidden]:
    """Everything the backup identity must be refused (the static list the
    tests also replay against a live endpoint)."""
    if spec.kind == "glacier":
        vault = spec.vault_arn()
        return [Forbidden(a.split(":")[1], a, vault, {}) for a in GLACIER_FORBIDDEN_ACTIONS] + [
            Forbidden(f"{a.split(':')[1]} (read archives back)", a, vault, {}, everyone=False) for a in GLACIER_FORBIDDEN_READS
        ]
    key = f"{spec.bucket_arn}/{spec.prefix}/2026/x.sqfs.gpg"
    ok = {"s3:object-lock-mode": "COMPLIANCE", "s3:object-lock-remaining-retention-days": str(spec.retain_days + 1),
          "s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}
    out = [Forbidden(a.split(":")[1], a, key, {}) for a in S3_FORBIDDEN_OBJECT_ACTIONS]
    out += [Forbidden(a.split(":")[1], a, key, {}, everyone=False) for a in S3_FORBIDDEN_READS]
    out += [Forbidden(a.split(":")[1], a, spec.bucket_arn, {}) for a in S3_FORBIDDEN_BUCKET_ACTIONS]
    out += [
        Forbidden("PutObject with GOVERNANCE", "s3:PutObject", key, {**ok, "s3:object-lock-mode": "GOVERNANCE"}),
        Forbidden("PutObject with 1 day of retention", "s3:PutObject", key,
                  {**ok, "s3:object-lock-remaining-retention-days": "1"}),
        Forbidden("PutObject replacing a key (no If-None-Match)", "s3:PutObject", key,
                  {k: v for k, v in ok.items() if k != "s3:if-none-match"}),
        Forbidden("CopyObject onto a key", "s3:PutObject", key,
                  {"s3:x-amz-copy-source": f"{spec.bucket}/{spec.prefix}/a", "s3:ObjectCreationOperation": "true"}),
        Forbidden("PutObject over plain HTTP", "s3:PutObject", key, {**ok, "aws:SecureTransport": "false"}),
        Forbidden("PutObject outside its prefix", "s3:PutObject", f"{spec.bucket_arn}/elsewhere/x", ok,
                  explicit=False, everyone=False),
        Forbidden("ListObjectsV2 of the whole bucket", "s3:ListBucket", spec.bucket_arn, {"s3:prefix": ""},
                  explicit=False, everyone=False),
        Forbidden("ListObjectsV2 of another prefix", "s3:ListBucket", spec.bucket_arn, {"s3:prefix": "elsewhere/"},
                  explicit=False, everyone=False),
    ]
    return out


def check_policies(spec: OffsiteSpec, docs: dict[str, Any] | None = None, identity_extra: Iterable[dict] = ()) -> list[str]:
    """Prove the documents statically; return the problems (empty: sound).

    - every request the pipeline sends is allowed for the backup identity;
    - every forbidden request is refused for it (by an explicit deny where
      :class:`Forbidden` says so);
    - the resource policy refuses every destructive request to any principal
      that is not an administrator, even one allowed ``*``, and still lets
      the administrators manage the bucket;
    - no administrator pattern matches the backup identity;
    - the identity policies grant no action beyond what the pipeline needs.

    ``identity_extra`` are further policies found on the backup identity.
    """
    docs = docs or documents(spec)
    problems = []
    account = spec.account_id or "000000000000"
    me = spec.identity_arn() if spec.account_id else f"arn:{spec.partition}:iam::{account}:user/snap/backup"
    ident_docs = [docs["identity_policy"], *identity_extra]
    res_key = "bucket_policy" if spec.kind == "s3" else "vault_access_policy"
    access = docs.get(res_key) or {"Statement": []}
    res_docs = [access] + ([docs["vault_lock_policy"]] if docs.get("vault_lock_policy") else [])
    for name, action, resource, ctx in pipeline_requests(spec):
        got = evaluate(ident_docs, res_docs, me, action, resource, ctx)
        if got != "allow":
            problems.append(f"the pipeline's {name} ({action}) would be refused ({got})")
    other = f"arn:{spec.partition}:iam::{account}:role/some-other-role"
    broad = [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}]
    for f in forbidden_requests(spec):
        got = evaluate(ident_docs, res_docs, me, f.action, f.resource, f.context)
        if got == "allow" or (f.explicit and got != "explicit-deny"):
            problems.append(f"the backup identity: {f.name} ({f.action}) is {got}" + (", not explicitly denied" if f.explicit else ""))
        if f.everyone:
            for who, label in ((other, "a non-administrator"), (me, "the backup identity if its own policy allowed everything")):
                if evaluate(broad, res_docs, who, f.action, f.resource, f.context) != "explicit-deny":
                    problems.append(f"the {res_key} does not deny {f.name} ({f.action}) to {label}")
    for st in _as_list(access.get("Statement")):
        for op in ("ArnNotLike", "ArnNotEquals", "StringNotLike", "StringNotEquals"):
            for key, vals in ((st.get("Condition") or {}).get(op) or {}).items():
                if key.lower() != "aws:principalarn":
                    continue
                for pattern in _as_list(vals):
                    if pattern not in spec.admins:
                        problems.append(f"the {res_key} statement {st.get('Sid')!r} exempts {pattern}, not an administrator")
    for admin in spec.admins:
        if _glob(admin, me):
            problems.append(f"administrator pattern {admin} matches the backup identity {me}")
        probe = admin.replace("*", "x").replace("?", "x")
        for f in forbidden_requests(spec):
            if f.everyone and f.context.get("aws:SecureTransport") != "false":
                if evaluate(broad, [access], probe, f.action, f.resource, f.context) != "allow":
                    problems.append(f"the {res_key} also denies {f.name} to the administrator {admin}")
    needed = set(GLACIER_ACTIONS_NEEDED if spec.kind == "glacier" else S3_OBJECT_ACTIONS_NEEDED + S3_BUCKET_ACTIONS_NEEDED)
    if spec.encryption == "aws:kms":
        needed |= {"kms:Decrypt", "kms:GenerateDataKey"}
    for doc in ident_docs:
        for st in _as_list(doc.get("Statement")):
            if st.get("Effect") != "Allow":
                continue
            for act in _as_list(st.get("Action")):
                if act not in needed:
                    problems.append(
                        f"the backup identity is granted {act} (statement {st.get('Sid')!r}), beyond what the pipeline needs"
                    )
    return problems


# -- AWS access ----------------------------------------------------------------


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
        s3_config = Config(s3={"addressing_style": "path"}) if (spec.force_path_style or (spec.force_path_style is None and spec.endpoint_url)) else None
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


def _canon(value):
    """Order-insensitive form of a policy/config for comparison: one-element
    lists and scalars are the same, lists are sorted, numbers are text."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        items = [_canon(v) for v in value]
        if len(items) == 1:
            return items[0]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def same(a, b) -> bool:
    return _canon(a) == _canon(b)


# -- provisioning --------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One change provisioning would make."""

    name: str
    action: str
    old: Any
    new: Any
    irreversible: bool = False
    apply: Callable[[], Any] | None = dataclasses.field(default=None, repr=False)

    def public(self) -> dict:
        out = {"step": self.name, "action": self.action, "old": self.old, "new": self.new}
        if self.irreversible:
            out["irreversible"] = True
        return out


def _policy_text(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def _read_json_policy(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unparseable": text}


def _denies(doc: dict | None) -> dict[str, dict]:
    return {st.get("Sid") or json.dumps(st, sort_keys=True): st for st in _as_list((doc or {}).get("Statement")) if st.get("Effect") == "Deny"}


def policy_weakening(old: dict | None, new: dict) -> list[str]:
    """Why replacing policy ``old`` by ``new`` would weaken it (empty: it
    does not). Weaker: a deny statement gone, a denied action gone, a deny
    narrowed to fewer resources, more principals exempt, a shorter retention
    in a condition."""
    reasons = []
    new_denies = _denies(new)
    for sid, st in _denies(old).items():
        nst = new_denies.get(sid)
        if nst is None:
            reasons.append(f"it drops the deny statement {sid}")
            continue
        gone = {a.lower() for a in _as_list(st.get("Action"))} - {a.lower() for a in _as_list(nst.get("Action"))}
        if gone:
            reasons.append(f"{sid} would no longer deny {', '.join(sorted(gone))}")
        res_gone = set(_as_list(st.get("Resource"))) - set(_as_list(nst.get("Resource")))
        if res_gone:
            reasons.append(f"{sid} would no longer cover {', '.join(sorted(res_gone))}")
        old_c, new_c = st.get("Condition") or {}, nst.get("Condition") or {}
        for op in ("ArnNotLike", "ArnNotEquals"):
            for key, vals in (new_c.get(op) or {}).items():
                added = set(_as_list(vals)) - set(_as_list((old_c.get(op) or {}).get(key)))
                if added:
                    reasons.append(f"{sid} would exempt more principals: {', '.join(sorted(added))}")
        for key, val in (old_c.get("NumericLessThan") or {}).items():
            nval = (new_c.get("NumericLessThan") or {}).get(key)
            if nval is None or float(nval) < float(val):
                reasons.append(f"{sid} would lower {key} from {val} to {nval}")
        for op, keys in new_c.items():
            if op not in old_c and op not in ("ArnNotLike", "ArnNotEquals"):
                reasons.append(f"{sid} would only apply under a new condition {op}")
    return reasons


def _retention_days(rule: dict | None) -> tuple[str | None, int]:
    dr = ((rule or {}).get("DefaultRetention")) or {}
    days = dr.get("Days") or 0
    if dr.get("Years"):
        days = 365 * int(dr["Years"])
    return dr.get("Mode"), int(days)


class Provisioner:
    """Plans and applies one spec. :meth:`plan` reads the current state and
    lists the :class:`Step` s; :meth:`run` applies them unless ``test``."""

    def __init__(self, spec: OffsiteSpec, session=None, log: Callable[[str], None] | None = None):
        self.spec = spec
        self.aws = Aws(spec, session)
        self.log = log or (lambda msg: None)
        self.steps: list[Step] = []
        self.refused: list[str] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.unconfirmed: list[str] = []

    # -- admins ---------------------------------------------------------------
    def _admins(self):
        caller = principal_of(self.aws.caller_arn())
        if not self.spec.admins:
            self.spec.admins = [caller]
            self.notes.append(f"administrators: {caller} (the identity running this; set snap:offsite:admins to choose)")
        elif not any(_glob(a, caller) for a in self.spec.admins):
            raise ProvisionError(
                f"the identity running this ({caller}) is not among snap:offsite:admins; the policies would "
                "lock it out of every later fix. Run it as an administrator, or add its ARN."
            )

    def _step(self, *args, **kw):
        step = Step(*args, **kw)
        if step.irreversible and not self.spec.confirmed:
            self.unconfirmed.append(
                f"{step.name}: {step.action} cannot be undone; set snap:offsite:confirm_irreversible to "
                f"{CONFIRM_PHRASE!r} to allow it"
            )
        self.steps.append(step)

    # -- S3 ----------------------------------------------------------------------
    def _plan_s3(self):
        s3, spec = self.aws.s3, self.spec
        from botocore.exceptions import ClientError  # noqa: PLC0415

        exists = True
        try:
            s3.head_bucket(Bucket=spec.bucket)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                exists = False
            else:
                raise ProvisionError(f"bucket {spec.bucket}: {exc} (does it belong to another account?)") from exc
        if not exists:
            create = {"Bucket": spec.bucket, "ObjectLockEnabledForBucket": True, "ObjectOwnership": "BucketOwnerEnforced"}
            if self.aws.region != "us-east-1":
                create["CreateBucketConfiguration"] = {"LocationConstraint": self.aws.region}
            self._step("bucket", "CreateBucket with Object Lock (cannot be turned off)", None, create, True, lambda: s3.create_bucket(**create))
            current = {"versioning": {}, "lock": {}, "pab": {}, "enc": {}, "lifecycle": [], "policy": None, "ownership": OWNERSHIP}
        else:
            current = read_s3(self.aws.s3, spec.bucket)
        desired = documents(spec)

        # Versioning (Object Lock needs it; with the lock it can never be suspended).
        if current["versioning"].get("Status") != "Enabled":
            cfg = desired["versioning"]
            self._step("versioning", "PutBucketVersioning", current["versioning"].get("Status"), cfg, False,
                       lambda: s3.put_bucket_versioning(Bucket=spec.bucket, VersioningConfiguration=cfg))
        # Object Lock and its default retention: set or strengthened, never shortened.
        lock = current["lock"]
        want = desired["object_lock"]
        mode, days = _retention_days(lock.get("Rule"))
        enabled = lock.get("ObjectLockEnabled") == "Enabled"
        if enabled and mode == "COMPLIANCE" and days > spec.retain_days:
            self.refused.append(
                f"object-lock: the bucket's default retention is COMPLIANCE {days} days; retain_days "
                f"{spec.retain_days} would shorten it. snap never shortens a lock: set "
                f"snap:offsite:retain_days to {days} or more"
            )
        elif not (enabled and mode == "COMPLIANCE" and days == spec.retain_days):
            self._step("object-lock", "PutObjectLockConfiguration (COMPLIANCE default retention)", lock or None, want, True,
                       lambda: s3.put_object_lock_configuration(Bucket=spec.bucket, ObjectLockConfiguration=want))
        # Public access block.
        if not same(current["pab"], PUBLIC_ACCESS_BLOCK):
            self._step("public-access-block", "PutPublicAccessBlock", current["pab"] or None, PUBLIC_ACCESS_BLOCK, False,
                       lambda: s3.put_public_access_block(Bucket=spec.bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK))
        # ACLs off: the bucket owner owns every object.
        if not same(current["ownership"], OWNERSHIP):
            self._step("ownership", "PutBucketOwnershipControls (BucketOwnerEnforced)", current["ownership"] or None, OWNERSHIP, False,
                       lambda: s3.put_bucket_ownership_controls(Bucket=spec.bucket, OwnershipControls=OWNERSHIP))
        # Encryption at rest.
        enc = desired["encryption"]
        if not self._encryption_ok(current["enc"], enc):
            self._step("encryption", "PutBucketEncryption", current["enc"] or None, enc, False,
                       lambda: s3.put_bucket_encryption(Bucket=spec.bucket, ServerSideEncryptionConfiguration=enc))
        # Lifecycle.
        lc = desired["lifecycle"]
        if not self._lifecycle_same(current["lifecycle"], lc["Rules"]):
            self._step("lifecycle", "PutBucketLifecycleConfiguration", current["lifecycle"] or None, lc, False,
                       lambda: s3.put_bucket_lifecycle_configuration(Bucket=spec.bucket, LifecycleConfiguration=lc))
        self._plan_identity()
        # The bucket policy last: it closes every door but the administrators'.
        pol = desired["bucket_policy"]
        if not same(current["policy"], pol):
            weaker = policy_weakening(current["policy"], pol) if current["policy"] else []
            if weaker:
                self.refused.append(
                    f"bucket-policy: the new policy would weaken the existing one: {'; '.join(weaker)}. "
                    "snap never weakens a policy; if this is intended, remove the bucket policy by hand as an administrator first"
                )
                self.steps.append(Step("bucket-policy", "PutBucketPolicy (refused)", current["policy"], pol))
            else:
                self._step("bucket-policy", "PutBucketPolicy", current["policy"], pol, False,
                           lambda: s3.put_bucket_policy(Bucket=spec.bucket, Policy=json.dumps(pol)))

    @staticmethod
    def _encryption_ok(current: dict, desired: dict) -> bool:
        rules = current.get("Rules") or []
        if not rules:
            return False
        have = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
        want = desired["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        return have.get("SSEAlgorithm") == want["SSEAlgorithm"] and have.get("KMSMasterKeyID") == want.get("KMSMasterKeyID")

    @staticmethod
    def _lifecycle_same(current: list, desired: list) -> bool:
        def norm(rule):
            r = {k: v for k, v in rule.items() if k in ("ID", "Status", "Filter", "Transitions", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload", "Expiration", "NoncurrentVersionTransitions")}
            # S3 omits defaults on read; drop empty values on both sides.
            for key in ("NoncurrentVersionExpiration", "Expiration"):
                if isinstance(r.get(key), dict):
                    r[key] = {k: v for k, v in r[key].items() if v not in (None, False, 0) or k in ("Days", "NoncurrentDays")}
            flt = r.get("Filter") or {}
            if "And" in flt:
                flt = {"And": {k: v for k, v in flt["And"].items() if v not in (None, [], "")}}
            r["Filter"] = flt
            return {k: v for k, v in r.items() if v not in (None, [], {})}

        return same(sorted((norm(r) for r in current), key=lambda r: r.get("ID", "")), sorted((norm(r) for r in desired), key=lambda r: r.get("ID", "")))

    # -- the backup identity ---------------------------------------------------------
    def _plan_identity(self):
        iam, spec, ident = self.aws.iam, self.spec, self.spec.identity
        from botocore.exceptions import ClientError  # noqa: PLC0415

        pol = identity_policy(spec)
        pol_text = json.dumps(pol)
        if ident.type == "user":
            try:
                iam.get_user(UserName=ident.name)
                exists = True
            except ClientError as exc:
                if _code(exc) != "NoSuchEntity":
                    raise
                exists = False
            if not exists:
                self._step("identity", f"CreateUser {ident.path}{ident.name}", None, {"UserName": ident.name, "Path": ident.path}, False,
                           lambda: iam.create_user(UserName=ident.name, Path=ident.path, Tags=[{"Key": "snap", "Value": "offsite-put-only"}]))
                current = None
            else:
                current = self._inline(iam.get_user_policy, UserName=ident.name)
                self._extra_grants(iam, "user", ident.name)
            if not same(current, pol):
                self._step("identity-policy", f"PutUserPolicy {IDENTITY_POLICY_NAME}", current, pol, False,
                           lambda: iam.put_user_policy(UserName=ident.name, PolicyName=IDENTITY_POLICY_NAME, PolicyDocument=pol_text))
            return
        trust = trust_policy(spec)
        try:
            role = iam.get_role(RoleName=ident.name)["Role"]
        except ClientError as exc:
            if _code(exc) != "NoSuchEntity":
                raise
            role = None
        if role is None:
            create = {"RoleName": ident.name, "Path": ident.path, "AssumeRolePolicyDocument": trust, "MaxSessionDuration": 3600 * int(ident.max_session_hours)}
            self._step("identity", f"CreateRole {ident.path}{ident.name}", None, create, False,
                       lambda: iam.create_role(**{**create, "AssumeRolePolicyDocument": json.dumps(trust), "Tags": [{"Key": "snap", "Value": "offsite-put-only"}]}))
            current = None
        else:
            have_trust = role.get("AssumeRolePolicyDocument")
            if isinstance(have_trust, str):
                from urllib.parse import unquote  # noqa: PLC0415

                have_trust = json.loads(unquote(have_trust))
            if not same(have_trust, trust):
                self._step("trust-policy", "UpdateAssumeRolePolicy", have_trust, trust, False,
                           lambda: iam.update_assume_role_policy(RoleName=ident.name, PolicyDocument=json.dumps(trust)))
            current = self._inline(iam.get_role_policy, RoleName=ident.name)
            self._extra_grants(iam, "role", ident.name)
        if not same(current, pol):
            self._step("identity-policy", f"PutRolePolicy {IDENTITY_POLICY_NAME}", current, pol, False,
                       lambda: iam.put_role_policy(RoleName=ident.name, PolicyName=IDENTITY_POLICY_NAME, PolicyDocument=pol_text))
        if ident.instance_profile:
            try:
                prof = iam.get_instance_profile(InstanceProfileName=ident.name)["InstanceProfile"]
                has_role = any(r["RoleName"] == ident.name for r in prof.get("Roles", []))
            except ClientError as exc:
                if _code(exc) != "NoSuchEntity":
                    raise
                self._step("instance-profile", f"CreateInstanceProfile {ident.name}", None, ident.name, False,
                           lambda: iam.create_instance_profile(InstanceProfileName=ident.name, Path=ident.path))
                has_role = False
            if not has_role:
                self._step("instance-profile-role", "AddRoleToInstanceProfile", None, ident.name, False,
                           lambda: iam.add_role_to_instance_profile(InstanceProfileName=ident.name, RoleName=ident.name))

    @staticmethod
    def _inline(call, **kw):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            doc = call(PolicyName=IDENTITY_POLICY_NAME, **kw)["PolicyDocument"]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise
        if isinstance(doc, str):
            from urllib.parse import unquote  # noqa: PLC0415

            doc = json.loads(unquote(doc))
        return doc

    def _extra_grants(self, iam, kind, name):
        """Other policies on the backup identity: reported, never removed by snap."""
        extra = identity_extra_policies(iam, kind, name)
        for label in extra:
            self.problems.append(
                f"the backup {kind} {name} also has {label}; snap's put-only policy must be its only one: remove it"
            )

    # -- Glacier vault ---------------------------------------------------------------
    def _plan_vault(self):
        g, spec = self.aws.glacier, self.spec
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            g.describe_vault(accountId="-", vaultName=spec.bucket)
        except ClientError as exc:
            raise ProvisionError(
                f"vault {spec.bucket}: {exc}. snap only configures existing vaults (Glacier takes no new "
                "customers); use kind s3 otherwise"
            ) from exc
        desired = vault_access_policy(spec)
        try:
            current = _read_json_policy(g.get_vault_access_policy(accountId="-", vaultName=spec.bucket)["policy"]["Policy"])
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            current = None
        if not same(current, desired):
            weaker = policy_weakening(current, desired) if current else []
            if weaker:
                self.refused.append(f"vault-access-policy: would weaken the existing policy: {'; '.join(weaker)}")
            else:
                self._step("vault-access-policy", "SetVaultAccessPolicy", current, desired, False,
                           lambda: g.set_vault_access_policy(accountId="-", vaultName=spec.bucket, policy={"Policy": json.dumps(desired)}))
        self._plan_identity()
        if spec.vault_lock:
            self._plan_vault_lock()

    def _plan_vault_lock(self):
        """Initiate -> (24 hours to test) -> verify -> complete, the last only
        with the confirmation phrase and the lock id that initiate printed."""
        g, spec = self.aws.glacier, self.spec
        from botocore.exceptions import ClientError  # noqa: PLC0415

        desired = vault_lock_policy(spec)
        try:
            lock = g.get_vault_lock(accountId="-", vaultName=spec.bucket)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            lock = None
        state = (lock or {}).get("State")
        current = _read_json_policy((lock or {}).get("Policy"))
        if state == "Locked":
            # Weaker: putting the completed policy in place of the one asked for would weaken it.
            weaker = policy_weakening(desired, current)
            if not same(current, desired):
                if not weaker:
                    self.notes.append("the vault lock is complete and at least as strict as retain_days asks")
                else:
                    self.problems.append(
                        f"the vault lock is complete and weaker than asked ({'; '.join(weaker)}); a completed lock "
                        "never changes: use a new vault for a longer retention"
                    )
            return
        if state == "InProgress" and same(current, desired):
            if spec.vault_lock_complete_id and spec.confirmed:
                lock_id = spec.vault_lock_complete_id
                self._step("vault-lock", "CompleteVaultLock", "InProgress", {"lockId": lock_id, "policy": desired}, True,
                           lambda: g.complete_vault_lock(accountId="-", vaultName=spec.bucket, lockId=lock_id))
            else:
                self.notes.append(
                    "the vault lock is in progress with the right policy (it expires 24 hours after it was "
                    "initiated): test it, then set snap:offsite:vault_lock:complete_lock_id to the lock id that "
                    f"initiate printed, and snap:offsite:confirm_irreversible to {CONFIRM_PHRASE!r}, to complete it"
                )
            return
        if state == "InProgress":
            self._step("vault-lock-abort", "AbortVaultLock (the lock in progress has another policy)", current, None, False,
                       lambda: g.abort_vault_lock(accountId="-", vaultName=spec.bucket))
        self._step("vault-lock", "InitiateVaultLock (24 hours to test it; reversible until completed)", current, desired, False,
                   lambda: self._initiate_vault_lock(desired))

    def _initiate_vault_lock(self, desired):
        out = self.aws.glacier.initiate_vault_lock(accountId="-", vaultName=self.spec.bucket, policy={"Policy": json.dumps(desired)})
        self.notes.append(
            f"vault lock initiated, lock id {out['lockId']}: complete it within 24 hours by setting "
            f"snap:offsite:vault_lock:complete_lock_id: {out['lockId']} (and the confirmation phrase), or let it expire"
        )
        return out

    # -- the run ------------------------------------------------------------------------
    def plan(self) -> list[Step]:
        self._admins()
        if self.spec.kind == "s3":
            self._plan_s3()
        else:
            self._plan_vault()
        self.problems.extend(check_policies(self.spec))
        return self.steps

    def run(self, test: bool = False) -> dict:
        self.plan()
        applied = []
        result: bool | None = True
        if self.refused or self.problems or (self.unconfirmed and not test):
            result = False
        elif test:
            result = None if self.steps else True
        else:
            for step in self.steps:
                self.log(f"snap provision: {step.action}")
                step.apply()
                applied.append(step.name)
        target = f"s3://{self.spec.bucket}" if self.spec.kind == "s3" else f"glacier vault {self.spec.bucket}"
        if result is False:
            comment = f"{target}: nothing changed: " + "; ".join(self.refused + self.problems + self.unconfirmed)
        elif not self.steps:
            comment = f"{target}: everything is in place, nothing to change"
        elif test:
            comment = f"{target}: {len(self.steps)} change(s) would be made (test)"
            if self.unconfirmed:
                comment += "; and need the confirmation first: " + "; ".join(self.unconfirmed)
        else:
            comment = f"{target}: {len(applied)} change(s) made"
        return {
            "result": result,
            "target": target,
            "test": bool(test),
            "comment": comment,
            "changes": {s.name: {"old": s.old, "new": s.new} for s in self.steps} if (applied or (test and result is None)) else {},
            "plan": [s.public() for s in self.steps],
            "refused": list(self.refused),
            "needs_confirmation": list(self.unconfirmed),
            "problems": list(self.problems),
            "notes": list(self.notes),
            "applied": applied,
            "documents": documents(self.spec),
        }


def read_s3(s3, b: str) -> dict:
    """The bucket's current configuration (absent parts as empty values)."""
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
    lock = read(s3.get_object_lock_configuration, "ObjectLockConfiguration", ("ObjectLockConfigurationNotFoundError",), {})
    pab = read(s3.get_public_access_block, "PublicAccessBlockConfiguration", ("NoSuchPublicAccessBlockConfiguration",), {})
    enc = read(s3.get_bucket_encryption, "ServerSideEncryptionConfiguration", ("ServerSideEncryptionConfigurationNotFoundError",), {})
    lifecycle = read(s3.get_bucket_lifecycle_configuration, "Rules", ("NoSuchLifecycleConfiguration",), [])
    policy = read(s3.get_bucket_policy, "Policy", ("NoSuchBucketPolicy",), None)
    ownership = read(s3.get_bucket_ownership_controls, "OwnershipControls", ("OwnershipControlsNotFoundError",), {})
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


def provision(settings: dict[str, Any], test: bool = False, session=None, log=None) -> dict:
    """Create or check everything the pillar ``snap:offsite`` describes.

    Returns a dict with ``result`` (True: in place or applied; None: test run
    with changes pending; False: refused or a problem), ``changes``, ``plan``
    (each step with the exact JSON it applies), ``refused``, ``problems``,
    ``notes`` and the ``documents``. Nothing is applied if anything is
    refused. Raises :class:`ProvisionError` for invalid settings.
    """
    spec = load_spec(settings)
    return Provisioner(spec, session=session, log=log).run(test=test)


# -- verify ----------------------------------------------------------------------------


def verify(settings: dict[str, Any], session=None) -> dict:
    """Read the configuration back and report every drift from the policy.

    Returns ``{"target", "ok", "checks": [{"check", "ok", "detail"}], "drift": [...]}``;
    ``ok`` is False when anything drifted. Longer retention than asked is no
    drift; a bucket policy that differs from snap's is drift even if it is
    stricter (say so and re-run provisioning).
    """
    spec = load_spec(settings)
    aws = Aws(spec, session)
    try:
        caller = principal_of(aws.caller_arn())
    except Exception:  # noqa: BLE001 - an auditor may lack sts; ARNs then need account_id
        caller = None
    if not spec.admins and caller:
        spec.admins = [caller]
    checks: list[dict] = []

    def check(name, ok, detail=""):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    from botocore.exceptions import ClientError  # noqa: PLC0415

    if spec.kind == "s3":
        try:
            aws.s3.head_bucket(Bucket=spec.bucket)
        except ClientError as exc:
            check("bucket exists", False, str(exc))
            return _verdict(spec, checks)
        cur = read_s3(aws.s3, spec.bucket)
        docs = documents(spec)
        check("versioning enabled", cur["versioning"].get("Status") == "Enabled", f"status {cur['versioning'].get('Status')}")
        mode, days = _retention_days(cur["lock"].get("Rule"))
        check("object lock enabled", cur["lock"].get("ObjectLockEnabled") == "Enabled", json.dumps(cur["lock"]))
        check("default retention COMPLIANCE", mode == "COMPLIANCE", f"mode {mode}")
        check(f"default retention >= {spec.retain_days} days", days >= spec.retain_days, f"{days} days")
        check("public access blocked", same(cur["pab"], PUBLIC_ACCESS_BLOCK), json.dumps(cur["pab"]))
        check("ACLs disabled (BucketOwnerEnforced)", same(cur["ownership"], OWNERSHIP), json.dumps(cur["ownership"]))
        check("encryption at rest", Provisioner._encryption_ok(cur["enc"], docs["encryption"]), json.dumps(cur["enc"], default=str))
        check("lifecycle as configured", Provisioner._lifecycle_same(cur["lifecycle"], docs["lifecycle"]["Rules"]), json.dumps(cur["lifecycle"], default=str))
        for rule in cur["lifecycle"]:
            nce = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
            exp = (rule.get("Expiration") or {}).get("Days")
            for what, n in (("noncurrent versions expire", nce), ("objects expire", exp)):
                if n is not None and n <= spec.retain_days:
                    check(f"lifecycle {rule.get('ID')}: {what} only after the lock", False, f"after {n} days")
        pol = cur["policy"]
        check("bucket policy is snap's", same(pol, docs["bucket_policy"]), "missing" if pol is None else _diff_hint(pol, docs["bucket_policy"]))
        if pol is not None:
            weaker = policy_weakening(docs["bucket_policy"], pol)
            check("bucket policy denies everything snap's denies", not weaker, "; ".join(weaker))
        actual_docs = dict(docs, bucket_policy=pol or {"Statement": []})
    else:
        docs = documents(spec)
        try:
            pol = _read_json_policy(aws.glacier.get_vault_access_policy(accountId="-", vaultName=spec.bucket)["policy"]["Policy"])
        except ClientError as exc:
            pol = None
            if _code(exc) != "ResourceNotFoundException":
                check("vault readable", False, str(exc))
        check("vault access policy is snap's", same(pol, docs["vault_access_policy"]), "missing" if pol is None else _diff_hint(pol, docs["vault_access_policy"]))
        actual_docs = dict(docs, vault_access_policy=pol or {"Statement": []})
        if spec.vault_lock:
            try:
                lock = aws.glacier.get_vault_lock(accountId="-", vaultName=spec.bucket)
            except ClientError as exc:
                lock = {"State": f"none ({_code(exc)})"}
            lpol = _read_json_policy(lock.get("Policy"))
            check("vault lock completed", lock.get("State") == "Locked", f"state {lock.get('State')}")
            check("vault lock at least as strict as asked", lpol is not None and not policy_weakening(docs["vault_lock_policy"], lpol), json.dumps(lpol))
            actual_docs["vault_lock_policy"] = lpol or {"Statement": []}
    # The backup identity.
    ident = spec.identity
    try:
        get = aws.iam.get_user_policy if ident.type == "user" else aws.iam.get_role_policy
        arg = {"UserName": ident.name} if ident.type == "user" else {"RoleName": ident.name}
        ipol = Provisioner._inline(get, **arg)
        extra = identity_extra_policies(aws.iam, ident.type, ident.name)
    except ClientError as exc:
        check(f"backup {ident.type} {ident.name} readable", False, str(exc))
        ipol, extra = None, {}
    check(f"backup {ident.type} {ident.name} has snap's put-only policy", same(ipol, docs["identity_policy"]), "missing" if ipol is None else _diff_hint(ipol, docs["identity_policy"]))
    check(f"backup {ident.type} {ident.name} has no other policy", not extra, ", ".join(extra))
    if ident.type == "role":
        try:
            role = aws.iam.get_role(RoleName=ident.name)["Role"]
            trust = role.get("AssumeRolePolicyDocument")
            if isinstance(trust, str):
                from urllib.parse import unquote  # noqa: PLC0415

                trust = json.loads(unquote(trust))
            check("trust policy is snap's", same(trust, docs["trust_policy"]), _diff_hint(trust, docs["trust_policy"]))
        except ClientError as exc:
            check(f"backup role {ident.name} readable", False, str(exc))
    actual_docs["identity_policy"] = ipol or {"Statement": []}
    if spec.account_id:
        problems = check_policies(spec, actual_docs, identity_extra=[d for d in extra.values() if d])
        check("static check of the policies read back", not problems, "; ".join(problems))
    return _verdict(spec, checks)


def _diff_hint(have, want) -> str:
    if same(have, want):
        return ""
    if isinstance(have, dict) and isinstance(want, dict) and "Statement" in want:
        hs = {s.get("Sid"): s for s in _as_list(have.get("Statement"))}
        ws = {s.get("Sid"): s for s in _as_list(want.get("Statement"))}
        parts = [f"missing {sid}" for sid in ws if sid not in hs]
        parts += [f"extra {sid}" for sid in hs if sid not in ws]
        parts += [f"changed {sid}" for sid in ws if sid in hs and not same(hs[sid], ws[sid])]
        return ", ".join(parts)
    return "differs"


def _verdict(spec: OffsiteSpec, checks: list[dict]) -> dict:
    drift = [f"{c['check']}: {c['detail']}" if c["detail"] else c["check"] for c in checks if not c["ok"]]
    target = f"s3://{spec.bucket}" if spec.kind == "s3" else f"glacier vault {spec.bucket}"
    return {"target": target, "ok": not drift, "checks": checks, "drift": drift}


def format_report(report: dict) -> str:
    lines = [f"verify-offsite {report['target']}"]
    for c in report["checks"]:
        mark = "ok   " if c["ok"] else "DRIFT"
        detail = f" ({c['detail']})" if c["detail"] and not c["ok"] else ""
        lines.append(f"  {mark} {c['check']}{detail}")
    lines.append("no drift" if report["ok"] else f"{len(report['drift'])} difference(s) from the policy")
    return "\n".join(lines)


# -- templates for provisioning outside Salt ----------------------------------------


def _cfn_lifecycle(rules: list[dict]) -> list[dict]:
    out = []
    for r in rules:
        c: dict[str, Any] = {"Id": r["ID"], "Status": r["Status"]}
        flt = r.get("Filter") or {}
        inner = flt.get("And", flt)
        if inner.get("Prefix"):
            c["Prefix"] = inner["Prefix"]
        if inner.get("ObjectSizeGreaterThan") is not None:
            c["ObjectSizeGreaterThan"] = str(inner["ObjectSizeGreaterThan"])
        if r.get("Transitions"):
            c["Transitions"] = [{"StorageClass": t["StorageClass"], "TransitionInDays": t["Days"]} for t in r["Transitions"]]
        if r.get("NoncurrentVersionExpiration"):
            c["NoncurrentVersionExpiration"] = {"NoncurrentDays": r["NoncurrentVersionExpiration"]["NoncurrentDays"]}
        if r.get("AbortIncompleteMultipartUpload"):
            c["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]}
        if r.get("Expiration"):
            c["ExpirationInDays"] = r["Expiration"]["Days"]
        out.append(c)
    return out


def cloudformation(spec: OffsiteSpec) -> dict:
    """A CloudFormation template (JSON) with the same bucket, policies and
    identity. S3 only (CloudFormation has no Glacier vault lock)."""
    if spec.kind != "s3":
        raise ProvisionError("CloudFormation templates are for kind s3; vaults get plain JSON policies")
    docs = documents(spec)
    enc = docs["encryption"]["Rules"][0]
    bucket_props = {
        "BucketName": spec.bucket,
        "ObjectLockEnabled": True,
        "ObjectLockConfiguration": docs["object_lock"],
        "VersioningConfiguration": {"Status": "Enabled"},
        "PublicAccessBlockConfiguration": docs["public_access_block"],
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": enc["ApplyServerSideEncryptionByDefault"], "BucketKeyEnabled": enc["BucketKeyEnabled"]}
            ]
        },
        "LifecycleConfiguration": {"Rules": _cfn_lifecycle(docs["lifecycle"]["Rules"])},
        "OwnershipControls": docs["ownership_controls"],
        "Tags": [{"Key": "snap", "Value": "offsite"}],
    }
    ident = spec.identity
    resources: dict[str, Any] = {
        "SnapBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": bucket_props,
        },
        "SnapBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {"Bucket": {"Ref": "SnapBucket"}, "PolicyDocument": docs["bucket_policy"]},
        },
    }
    inline = [{"PolicyName": IDENTITY_POLICY_NAME, "PolicyDocument": docs["identity_policy"]}]
    if ident.type == "user":
        resources["SnapBackupIdentity"] = {
            "Type": "AWS::IAM::User",
            "Properties": {"UserName": ident.name, "Path": ident.path, "Policies": inline},
        }
    else:
        resources["SnapBackupIdentity"] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": ident.name,
                "Path": ident.path,
                "AssumeRolePolicyDocument": docs["trust_policy"],
                "MaxSessionDuration": 3600 * int(ident.max_session_hours),
                "Policies": inline,
            },
        }
        if ident.instance_profile:
            resources["SnapBackupInstanceProfile"] = {
                "Type": "AWS::IAM::InstanceProfile",
                "Properties": {"InstanceProfileName": ident.name, "Path": ident.path, "Roles": [{"Ref": "SnapBackupIdentity"}]},
            }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            f"snap off-site storage: bucket {spec.bucket} with Object Lock COMPLIANCE {spec.retain_days} days, "
            f"lifecycle to {spec.storage_class}, and the backup server's put-only {ident.type} {ident.name}. "
            "Deploy it as one of the administrators the bucket policy names."
        ),
        "Resources": resources,
        "Outputs": {
            "BucketName": {"Value": {"Ref": "SnapBucket"}},
            "BackupIdentityArn": {"Value": {"Fn::GetAtt": ["SnapBackupIdentity", "Arn"]}},
        },
    }


def template(settings: dict[str, Any], directory: str | os.PathLike) -> list[str]:
    """Write the documents as JSON files into ``directory`` (created 0755):
    one file per document, ``cloudformation.json`` for S3, and a README.
    Returns the paths written. Needs ``account_id`` in the settings for vaults
    and for the backup identity's ARN."""
    spec = load_spec(settings)
    if not spec.admins:
        raise ProvisionError("snap:offsite:admins is required for a template (no caller to default to)")
    os.makedirs(directory, exist_ok=True)
    written = []

    def write(name, doc):
        path = os.path.join(os.fspath(directory), name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(_policy_text(doc) + "\n")
        written.append(path)

    for name, doc in documents(spec).items():
        write(f"{name}.json", doc)
    if spec.kind == "s3":
        write("cloudformation.json", cloudformation(spec))
    lines = [
        f"snap off-site documents for {spec.kind} {spec.bucket} (prefix {spec.prefix}/, {spec.retain_days} days COMPLIANCE).",
        "Generated by snap_core.provision; the same JSON `salt-run snap.provision` applies.",
        "",
    ]
    if spec.kind == "s3":
        lines += [
            "aws cloudformation deploy --template-file cloudformation.json --stack-name snap-offsite \\",
            "    --capabilities CAPABILITY_NAMED_IAM    # as one of the administrators in bucket_policy.json",
        ]
    else:
        lines += ["aws glacier set-vault-access-policy ... --policy file://vault_access_policy.json"]
    path = os.path.join(os.fspath(directory), "README.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    written.append(path)
    return written


# -- the backup server's credentials ------------------------------------------------


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


# -- CLI (registered in snap_core.cli by the coordinator) -------------------------------

VERIFY_HELP = "read the off-site bucket/vault configuration back and report drift from the policy (exit 1 on drift)"
VERIFY_ARGS: tuple = (
    (("--config",), {"required": True, "help": "JSON file: the snap:offsite settings, or an object with an 'offsite' key"}),
    (("--admin-profile",), {"default": None, "help": "AWS profile of the administrator/auditor identity that reads it"}),
)
TEMPLATE_HELP = "write the off-site policies and a CloudFormation template as JSON files (for provisioning outside Salt)"
TEMPLATE_ARGS: tuple = (
    (("--config",), {"required": True, "help": "JSON file: the snap:offsite settings, or an object with an 'offsite' key"}),
    (("--out",), {"required": True, "help": "directory to write into"}),
)


def _settings_from_file(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, dict) and isinstance(data.get("offsite"), dict):
        data = data["offsite"]
    return data


def cmd_verify_offsite(args) -> None:
    """``snap-backup verify-offsite``: prints the report, raises
    :class:`OffsiteDrift` (exit 1) when anything drifted."""
    settings = _settings_from_file(args.config)
    if getattr(args, "admin_profile", None):
        settings = dict(settings, admin_profile=args.admin_profile)
    report = verify(settings)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    if not report["ok"]:
        raise OffsiteDrift(f"{len(report['drift'])} difference(s) from the policy: " + "; ".join(report["drift"]))


def cmd_offsite_template(args) -> dict:
    """``snap-backup offsite-template``: write the documents, return the paths."""
    return {"written": template(_settings_from_file(args.config), args.out)}


def main_verify(argv=None) -> int:  # pragma: no cover - convenience entry
    """Standalone ``python -m snap_core.provision --config FILE``."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="snap-verify-offsite", description=VERIFY_HELP)
    parser.add_argument("--json", action="store_true")
    for names, options in VERIFY_ARGS:
        parser.add_argument(*names, **options)
    args = parser.parse_args(argv)
    try:
        cmd_verify_offsite(args)
    except OffsiteDrift as exc:
        print(f"verify-offsite: {exc}", file=sys.stderr)
        return 1
    except (ProvisionError, OSError, ValueError) as exc:
        print(f"verify-offsite: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_verify())
