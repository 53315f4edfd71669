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
