"""The documents as JSON files and a CloudFormation template, for
provisioning outside Salt."""

from __future__ import annotations

import os
from typing import Any

from snap_core.provision.compare import _policy_text
from snap_core.provision.policies import documents
from snap_core.provision.spec import IDENTITY_POLICY_NAME, OffsiteSpec, ProvisionError, load_spec


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
            c["Transitions"] = [
                {"StorageClass": t["StorageClass"], "TransitionInDays": t["Days"]} for t in r["Transitions"]
            ]
        if r.get("NoncurrentVersionExpiration"):
            c["NoncurrentVersionExpiration"] = {"NoncurrentDays": r["NoncurrentVersionExpiration"]["NoncurrentDays"]}
        if r.get("AbortIncompleteMultipartUpload"):
            c["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            }
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
                {
                    "ServerSideEncryptionByDefault": enc["ApplyServerSideEncryptionByDefault"],
                    "BucketKeyEnabled": enc["BucketKeyEnabled"],
                }
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
                "Properties": {
                    "InstanceProfileName": ident.name,
                    "Path": ident.path,
                    "Roles": [{"Ref": "SnapBackupIdentity"}],
                },
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
