"""The documents provisioning applies, verifies, templates and proves:
the single source of every policy and configuration."""

from __future__ import annotations

import copy
from typing import Any

from snap_core.provision.spec import (
    GLACIER_ACTIONS_NEEDED,
    GLACIER_FORBIDDEN_ACTIONS,
    GLACIER_FORBIDDEN_READS,
    S3_FORBIDDEN_BUCKET_ACTIONS,
    S3_FORBIDDEN_OBJECT_ACTIONS,
    S3_FORBIDDEN_READS,
    S3_OBJECT_ACTIONS_NEEDED,
    OffsiteSpec,
    ProvisionError,
)


def _admin_exempt(spec: OffsiteSpec) -> dict:
    """The condition that exempts the administrator principals from a deny."""
    if not spec.admins:
        raise ProvisionError("no administrator principal: set snap:offsite:admins (ARNs)")
    return {"ArnNotLike": {"aws:PrincipalArn": sorted(spec.admins)}}


def object_actions_needed(spec: OffsiteSpec) -> tuple[str, ...]:
    """Object actions the backup identity needs: create objects and
    multipart uploads, abort its own incomplete ones, read every lock back,
    and with ``retention_repair`` extend a lock the server dropped."""
    extra = ("s3:PutObjectRetention",) if spec.retention_repair else ()
    return S3_OBJECT_ACTIONS_NEEDED + extra


def forbidden_object_actions(spec: OffsiteSpec) -> tuple[str, ...]:
    """Object actions only an administrator may take. PutObjectRetention is
    among them unless ``retention_repair``; then conditions bound it
    (COMPLIANCE only, between retain_days and the cap)."""
    return tuple(
        a
        for a in S3_FORBIDDEN_OBJECT_ACTIONS
        if not (spec.retention_repair and a == "s3:PutObjectRetention")
        and not (spec.provider == "ceph" and a in CEPH_UNKNOWN_ACTIONS)
    )


#: What the administrators (Ceph: the bucket owner and whoever audits or
#: fixes a lock) may do to the backup user's objects: read, read and extend
#: retention, clean up; Object Lock still refuses every delete of a locked version.
CEPH_ADMIN_ACTIONS = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectRetention",
    "s3:PutObjectRetention",
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:ListBucketMultipartUploads",
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
)
#: What a restore or audit identity needs.
#: ListBucketVersions: a reader reads each manifest at its first version and
#: reports any later version of a key as tampering.
READER_ACTIONS = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectRetention",
    "s3:ListBucket",
    "s3:ListBucketVersions",
)

#: Actions Ceph RGW 16 does not know (it refuses a policy naming them, InvalidArgument;
#: measured) and has no API for anyway.
CEPH_UNKNOWN_ACTIONS = (
    "s3:PutBucketOwnershipControls",
    "s3:PutEncryptionConfiguration",
    "s3:PutInventoryConfiguration",
    "s3:ReplicateObject",
)


def forbidden_bucket_actions(spec: OffsiteSpec) -> tuple[str, ...]:
    """Bucket actions only an administrator may take (as the provider names them)."""
    if spec.provider == "ceph":
        return tuple(a for a in S3_FORBIDDEN_BUCKET_ACTIONS if a not in CEPH_UNKNOWN_ACTIONS)
    return S3_FORBIDDEN_BUCKET_ACTIONS


def bucket_policy(spec: OffsiteSpec) -> dict:
    """The bucket policy: every way of destroying, shortening or
    reconfiguring is denied, and uploads or retention changes that would
    carry a weaker lock than the bucket's, a shorter one than retain_days,
    or a longer one than the cap (retain_days + the chain's maximum age + 7
    days: no lock-bombing), or that replace an existing key.

    On AWS the denies apply to everyone but the administrators; on other
    providers (no IAM, and no ``aws:PrincipalArn`` in Ceph RGW 16's policy
    engine) to the backup user by name, and the policy also grants that user
    exactly what the pipeline needs.

    A PutObject *without* lock headers is not denied: UploadPart and
    CompleteMultipartUpload never carry them, and a condition on their absence
    would refuse every multipart upload. Such an object gets the bucket's
    default retention (COMPLIANCE, retain_days), which only an administrator
    can change, and snap reads every lock back.
    """
    objects, bucket = spec.objects_arn, spec.bucket_arn
    if spec.is_aws:
        exempt = _admin_exempt(spec)
        principal: dict = {"AWS": "*"}
    else:
        exempt = {}
        principal = {"AWS": [spec.backup_principal()]}
    lock_actions = ["s3:PutObject", "s3:PutObjectRetention"]

    def deny(sid, actions, resource, condition=None):
        cond = copy.deepcopy(exempt)
        for op, values in (condition or {}).items():
            cond.setdefault(op, {}).update(values)
        st = {
            "Sid": sid,
            "Effect": "Deny",
            "Principal": copy.deepcopy(principal),
            "Action": sorted(actions),
            "Resource": resource,
        }
        if cond:
            st["Condition"] = cond
        return st

    statements = []
    if not spec.is_aws:
        # Objects belong to the user who wrote them (RGW has no
        # BucketOwnerEnforced): the administrators and readers get their
        # access to the backup user's objects from here.
        if spec.admins:
            statements.append(
                {
                    "Sid": "SnapAllowAdministrators",
                    "Effect": "Allow",
                    "Principal": {"AWS": sorted(spec.admins)},
                    "Action": sorted(CEPH_ADMIN_ACTIONS),
                    "Resource": [bucket, objects],
                }
            )
        if spec.readers:
            statements.append(
                {
                    "Sid": "SnapAllowReaders",
                    "Effect": "Allow",
                    "Principal": {"AWS": sorted(spec.readers)},
                    "Action": sorted(READER_ACTIONS),
                    "Resource": [bucket, objects],
                }
            )
        statements += [
            {
                "Sid": "SnapAllowBackupUploads",
                "Effect": "Allow",
                "Principal": copy.deepcopy(principal),
                "Action": sorted(object_actions_needed(spec)),
                "Resource": spec.prefix_arn,
            },
            {
                "Sid": "SnapAllowBackupListing",
                "Effect": "Allow",
                "Principal": copy.deepcopy(principal),
                "Action": ["s3:ListBucketMultipartUploads"],
                "Resource": bucket,
            },
        ]
    destruction = forbidden_object_actions(spec) + (() if spec.is_aws else S3_FORBIDDEN_READS)
    statements += [
        deny("SnapDenyObjectDestruction", destruction, objects),
        deny("SnapDenyBucketReconfiguration", forbidden_bucket_actions(spec), bucket),
        deny(
            "SnapDenyWeakerLockMode",
            lock_actions,
            objects,
            {"Null": {"s3:object-lock-mode": "false"}, "StringNotEquals": {"s3:object-lock-mode": "COMPLIANCE"}},
        ),
        deny(
            "SnapDenyShorterRetention",
            lock_actions,
            objects,
            {"NumericLessThan": {"s3:object-lock-remaining-retention-days": str(spec.retain_days)}},
        ),
        deny(
            "SnapDenyLongerRetention",
            lock_actions,
            objects,
            {"NumericGreaterThan": {"s3:object-lock-remaining-retention-days": str(spec.retention_cap_days)}},
        ),
    ]
    if spec.is_aws:
        # Ceph RGW 16 knows no s3:if-none-match: Null would match every
        # request there. Unique keys and recorded version ids carry the
        # no-overwrite promise on every provider.
        statements.append(
            deny(
                "SnapDenyReplacingObjects",
                ["s3:PutObject"],
                objects,
                {"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}},
            )
        )
    if spec.secure_transport_only:
        statements.append(
            {
                "Sid": "SnapDenyInsecureTransport",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": ["s3:*"],
                "Resource": [bucket, objects],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


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
                {
                    "Sid": "SnapUploadArchives",
                    "Effect": "Allow",
                    "Action": sorted(GLACIER_ACTIONS_NEEDED),
                    "Resource": vault,
                },
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
            "Action": sorted(object_actions_needed(spec)),
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
            "Action": sorted(forbidden_object_actions(spec) + S3_FORBIDDEN_BUCKET_ACTIONS + S3_FORBIDDEN_READS),
            "Resource": [spec.bucket_arn, spec.objects_arn],
        },
    ]
    if spec.provider == "minio":
        # No bucket policy there: the identity's own policy carries the
        # lock conditions (MinIO evaluates them, per its documentation).
        for st in bucket_policy(spec)["Statement"]:
            if st["Sid"] in (
                "SnapDenyWeakerLockMode",
                "SnapDenyShorterRetention",
                "SnapDenyLongerRetention",
                "SnapDenyInsecureTransport",
            ):
                statements.append({k: v for k, v in st.items() if k != "Principal"})
    if spec.encryption == "aws:kms" and spec.is_aws:
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
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": spec.default_retention_days}},
    }


OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
#: Ceph RGW 16 (measured): with BlockPublicAcls every PutObject is refused,
#: even the owner's; with BlockPublicPolicy every bucket policy that grants
#: another user anything (the backup user's grant) is refused as "public".
PUBLIC_ACCESS_BLOCK_CEPH = dict(PUBLIC_ACCESS_BLOCK, BlockPublicAcls=False, BlockPublicPolicy=False)


def public_access_block(spec: OffsiteSpec) -> dict:
    return dict(PUBLIC_ACCESS_BLOCK_CEPH if spec.provider == "ceph" else PUBLIC_ACCESS_BLOCK)


def encryption_configuration(spec: OffsiteSpec) -> dict:
    default: dict = {"SSEAlgorithm": spec.encryption}
    if spec.encryption == "aws:kms":
        default["KMSMasterKeyID"] = spec.kms_key_id
    return {
        "Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": spec.encryption == "aws:kms"}]
    }


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
            "ID": "snap-abort-incomplete-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": spec.abort_incomplete_days},
        },
    ]
    if spec.storage_class == "STANDARD":
        rules = rules[1:]  # archives stay where they are written
    if spec.noncurrent_expire_days is not None:  # AWS only: see spec.load_spec
        rules.insert(
            len(rules) - 1,
            {
                "ID": "snap-noncurrent-expiry",
                "Status": "Enabled",
                "Filter": {"Prefix": prefix},
                "NoncurrentVersionExpiration": {"NoncurrentDays": spec.noncurrent_expire_days},
            },
        )
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
    """Every document provisioning would apply, by name (the exact JSON).

    ``ceph``: no identity policy (no IAM: the bucket policy grants the backup
    user), no ownership controls or default encryption (RGW 16 refuses both).
    ``minio``: the identity policy is for ``mc admin policy`` by hand; no
    bucket policy (MinIO's bucket policies are for anonymous access).
    """
    docs: dict[str, Any] = {}
    if spec.provider != "ceph":
        docs["identity_policy"] = identity_policy(spec)
    trust = trust_policy(spec)
    if trust:
        docs["trust_policy"] = trust
    if spec.kind == "s3":
        docs.update(
            object_lock=lock_configuration(spec),
            public_access_block=public_access_block(spec),
            lifecycle=lifecycle_configuration(spec),
            versioning={"Status": "Enabled"},
        )
        if spec.provider != "minio":
            docs["bucket_policy"] = bucket_policy(spec)
        if spec.is_aws:
            docs.update(
                ownership_controls=copy.deepcopy(OWNERSHIP),
                encryption=encryption_configuration(spec),
            )
    else:
        docs["vault_access_policy"] = vault_access_policy(spec)
        if spec.vault_lock:
            docs["vault_lock_policy"] = vault_lock_policy(spec)
    return docs
