"""The off-site settings (pillar ``snap:offsite``) validated into a spec,
and the constants every other part of provisioning shares."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

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
#: Storage classes an archive may go to (STANDARD: no lifecycle transition,
#: what S3-compatible servers offer).
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "STANDARD")
#: Who provides the S3 service. ``aws``: AWS (and emulators of its IAM: moto,
#: LocalStack): IAM identities, bucket policy for everyone but admins.
#: ``ceph``: Ceph RADOS Gateway: no IAM (the backup user is made by hand with
#: radosgw-admin); the bucket policy grants and denies that user by name.
#: ``minio``: MinIO: policies are attached to users by hand (mc admin policy).
PROVIDERS = ("aws", "ceph", "minio")
#: Default of ``snap:archive:chain:max_age_days``: how long an incremental
#: chain may grow before a new full archive starts it again.
CHAIN_MAX_AGE_DAYS = 180
#: Slack above retain_days + chain age in the cap on retention (days).
RETENTION_CAP_SLACK_DAYS = 7
#: Minimum storage duration AWS bills, per class (days).
MIN_STORAGE_DAYS = {"GLACIER": 90, "DEEP_ARCHIVE": 180, "GLACIER_IR": 90}

# What the upload pipeline (rust/snap-offsite, s3/) needs, and nothing more:
# create objects, abort its own incomplete uploads, read every lock back
# (GetObjectRetention reveals nothing of an object). With retention_repair,
# also s3:PutObjectRetention (see policies.object_actions_needed).
S3_OBJECT_ACTIONS_NEEDED = ("s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObjectRetention")
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
    # Nothing snap does needs these; denied so that a broader policy attached
    # later grants them to nobody (cold attack on issue 12, hardening).
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
    "s3:ReplicateObject",
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
    # The budget alarm filters on the bucket's cost-allocation tag; the others
    # copy, announce, publish or bill the bucket's contents elsewhere.
    "s3:PutBucketTagging",
    "s3:PutBucketNotification",
    "s3:PutBucketLogging",
    "s3:PutBucketRequestPayment",
    "s3:PutBucketCORS",
    "s3:PutBucketWebsite",
    "s3:PutInventoryConfiguration",
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
    # S3-compatible providers: the principal ARN the server knows the backup
    # user by (Ceph: arn:aws:iam:::user/NAME, or arn:aws:iam::TENANT:user/NAME).
    arn: str | None = None


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
    #: Ceph: restore/audit identities the bucket policy lets read (on AWS
    #: they get that from their own IAM policy).
    readers: list[str] = dataclasses.field(default_factory=list)
    admin_profile: str | None = None
    identity: IdentitySpec = dataclasses.field(default_factory=IdentitySpec)
    confirm_irreversible: str | None = None
    vault_lock: bool = False
    vault_lock_complete_id: str | None = None
    account_id: str | None = None
    provider: str = "aws"
    #: snap:archive:chain:max_age_days (an incremental chain's base must
    #: stay locked as long as its newest increment needs it).
    chain_max_age_days: int = CHAIN_MAX_AGE_DAYS
    #: snap:archive:chain:enabled: the backup server archives chains, whose
    #: data pieces must stay locked for the chain's whole life.
    chains: bool = False
    #: The backup identity may extend a lock the server dropped
    #: (PutObjectRetention, COMPLIANCE, within [retain_days, cap]; the
    #: bounds are enforced by AWS, not by Ceph RGW 16, see retention_repair
    #: in load_spec).
    retention_repair: bool = False

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

    @property
    def is_aws(self) -> bool:
        return self.provider == "aws"

    @property
    def retention_cap_days(self) -> int:
        """The longest retention the backup identity may set: retain_days,
        plus (with chains) the chain's maximum age, plus a week of slack. A
        compromised backup server cannot lock anything for longer
        (lock-bombing). Without chains nothing snap writes needs more than
        retain_days and a day, so the room for a chain's life is not given
        away (cold attack on the 180-day default: 277 days for every bucket).
        Since chains became the default for an S3 target (2026-12-02) the
        callers that read pillar (the runner, the state, the offsite CLI)
        set ``chains`` from it, so a bucket gets the wider cap unless its
        backup server turns chains off (snap_core.chains); this spec keeps
        ``chains=False`` unless told."""
        chain = self.chain_max_age_days if self.chains else 0
        return self.retain_days + chain + RETENTION_CAP_SLACK_DAYS

    @property
    def default_retention_days(self) -> int:
        """The bucket's default COMPLIANCE retention. Ceph RGW 16 stores a
        multipart upload with only the bucket default (tracker 63724), counted
        from the upload; snap asks every object for retain_days plus a day
        (its margin for clock skew), so the default there is a day longer and
        the lock read back holds without a repair. With chains, a data piece
        is asked for the chain's whole life (base + max_age_days + retain_days
        + a day): there the default covers that (counted from each piece's
        upload, never earlier than the base), within the cap on retention.
        Measured on Ceph RGW 16: without it, the first multipart data piece
        of a chain was refused (locked 92 days, needed 182)."""
        if self.provider != "ceph":
            return self.retain_days
        return self.retain_days + 1 + (self.chain_max_age_days + 1 if self.chains else 0)

    @property
    def secure_transport_only(self) -> bool:
        """AWS: always; others: when the endpoint is https (a policy
        refusing plain HTTP on an http endpoint would refuse everything)."""
        return self.is_aws or str(self.endpoint_url or "").startswith("https://")

    def backup_principal(self) -> str:
        """The backup identity as the bucket policy names it."""
        if self.is_aws:
            return self.identity_arn()
        return self.identity.arn or f"arn:{self.partition}:iam:::user/{self.identity.name}"

    def identity_arn(self) -> str:
        if not self.account_id:
            raise ProvisionError("the backup identity's ARN needs the account id")
        kind = "user" if self.identity.type == "user" else "role"
        return f"arn:{self.partition}:iam::{self.account_id}:{kind}{self.identity.path}{self.identity.name}"


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VAULT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
_IAM_NAME_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
_ARN_RE = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}|\*)?:.+$")
# A user of an S3-compatible server: arn:aws:iam:::user/NAME, or with a Ceph tenant.
_USER_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[A-Za-z0-9_-]*:user/[A-Za-z0-9+=,.@_/-]+$")
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
    "stall_timeout",
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
    provider = str(settings.get("provider", "aws")).lower()
    if provider not in PROVIDERS:
        raise ProvisionError(f"snap:offsite:provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    if provider != "aws" and kind != "s3":
        raise ProvisionError(f"snap:offsite:provider {provider} has no Glacier vaults: use kind s3")
    storage_class = str(settings.get("storage_class", "GLACIER" if provider == "aws" else "STANDARD")).upper()
    if storage_class not in ARCHIVE_CLASSES:
        raise ProvisionError(
            f"snap:offsite:storage_class must be one of {', '.join(ARCHIVE_CLASSES)}, not {storage_class!r}"
        )
    transition = _int(settings, "transition_days", 0)
    if transition < 0:
        raise ProvisionError("snap:offsite:transition_days must be 0 (at once) or more")
    # Only AWS refuses an overwrite (the bucket policy's s3:if-none-match):
    # elsewhere the backup identity can put a second version over a genuine
    # archive, and a noncurrent-expiry rule would then delete the genuine one.
    noncurrent = _int(settings, "noncurrent_expire_days", retain + 1 if provider == "aws" else None)
    if noncurrent is not None and provider != "aws":
        raise ProvisionError(
            f"snap:offsite:noncurrent_expire_days is refused for provider {provider}: that server cannot refuse "
            "an overwrite, so a compromised backup server could make a genuine archive noncurrent and this rule "
            "would delete it. Leave it unset; snap's listing reports every second version as tampering, and old "
            "versions are removed by hand after review (docs/OFFSITE.md)"
        )
    if noncurrent is not None and noncurrent <= retain:
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
    readers = settings.get("readers") or []
    if isinstance(readers, str):
        readers = [readers]
    if provider == "ceph":
        if not admins:
            raise ProvisionError(
                "snap:offsite:admins is required for provider ceph: the RGW users (arn:aws:iam:::user/NAME) that "
                "own the bucket, audit, restore and fix locks (objects belong to the backup user there; the "
                "bucket policy grants the administrators access)"
            )
        for arn in admins + readers:
            if not isinstance(arn, str) or not _USER_ARN_RE.match(arn):
                raise ProvisionError(
                    f"snap:offsite:admins/readers: {arn!r} is not an RGW user ARN (arn:aws:iam:::user/NAME)"
                )
        admins_to_check = []
    else:
        admins_to_check = admins
    for arn in admins_to_check:
        if not isinstance(arn, str) or not _ARN_RE.match(arn):
            raise ProvisionError(f"snap:offsite:admins: {arn!r} is not an IAM principal ARN")
        if arn.split(":", 5)[5] in ("*", "user/*", "role/*"):
            raise ProvisionError(
                f"snap:offsite:admins: {arn!r} would exempt every principal of the account, the backup server included"
            )
    identity = _identity_spec(settings.get("identity") or {})
    if provider != "aws" and identity.type != "user":
        raise ProvisionError(f"snap:offsite:identity:type must be user for provider {provider} (no IAM roles there)")
    chain_age = _int(settings, "chain_max_age_days", CHAIN_MAX_AGE_DAYS)
    if chain_age < 0:
        raise ProvisionError("snap:archive:chain:max_age_days must not be negative")
    if retain + chain_age + RETENTION_CAP_SLACK_DAYS > MAX_RETAIN_DAYS:
        raise ProvisionError(
            f"retain_days {retain} + snap:archive:chain:max_age_days {chain_age} + {RETENTION_CAP_SLACK_DAYS} "
            f"is above the maximum retention of {MAX_RETAIN_DAYS} days"
        )
    # Off by default: AWS keeps every lock as asked; Ceph RGW 16 keeps the
    # bucket default on multipart uploads, and there a PutObjectRetention
    # right is a way to *unlock* (a date past 2106 wraps to the past,
    # measured) which no policy condition can bound.
    chains = settings.get("chains", False)
    if not isinstance(chains, bool):
        raise ProvisionError(f"snap:archive:chain:enabled must be true or false, not {chains!r}")
    repair = settings.get("retention_repair", False)
    if not isinstance(repair, bool):
        raise ProvisionError(f"snap:offsite:retention_repair must be true or false, not {repair!r}")
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
        readers=list(readers),
        admin_profile=settings.get("admin_profile"),
        identity=identity,
        confirm_irreversible=settings.get("confirm_irreversible"),
        vault_lock=bool(vault_lock.get("enabled", False)),
        vault_lock_complete_id=vault_lock.get("complete_lock_id"),
        account_id=settings.get("account_id"),
        provider=provider,
        chain_max_age_days=chain_age,
        chains=chains,
        retention_repair=repair,
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
    if spec.arn is not None and not _USER_ARN_RE.match(str(spec.arn)):
        raise ProvisionError(f"snap:offsite:identity:arn {spec.arn!r} is not a principal ARN")
    if not (spec.path.startswith("/") and spec.path.endswith("/")):
        raise ProvisionError(f"snap:offsite:identity:path {spec.path!r} must start and end with /")
    if isinstance(spec.assume_from, str):
        spec.assume_from = [spec.assume_from]
    if spec.type == "user" and (spec.assume_from or spec.instance_profile or spec.roles_anywhere or spec.web_identity):
        raise ProvisionError(
            "snap:offsite:identity: assume_from, instance_profile, roles_anywhere and web_identity are for type role"
        )
    if spec.type == "role" and not (
        spec.assume_from or spec.instance_profile or spec.roles_anywhere or spec.web_identity
    ):
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
