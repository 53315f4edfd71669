"""S3-compatible servers: what provisioning cannot do through the S3 API
there, as steps for the operator (with the exact commands).

What snap does itself on every provider: the bucket with Object Lock,
versioning, the COMPLIANCE default retention, the public access block, the
lifecycle (noncurrent versions and incomplete uploads), and on Ceph RGW the
bucket policy that grants the backup user what the pipeline needs and denies
it every delete, retention weakening and reconfiguration (RGW honours it).
What only the operator can do there: create the users (no IAM API for it in
RGW 16 or MinIO), set quotas, and on MinIO attach the policy to the user.
"""

from __future__ import annotations

import json

from snap_core.provision.spec import IDENTITY_POLICY_NAME, OffsiteSpec


def manual_steps(spec: OffsiteSpec) -> list[str]:
    """Notes for the operator: each a step snap cannot take on ``spec.provider``."""
    name, bucket = spec.identity.name, spec.bucket
    cap = spec.retention_cap_days
    if spec.provider == "ceph":
        return [
            f"by hand (Ceph RGW has no IAM API for users): radosgw-admin user create --uid={name} "
            f'--display-name="snap backup server"; give its keys to the backup server through sdb '
            f"(snap:offsite:credentials), never pillar. The bucket policy names it as {spec.backup_principal()} "
            "(set snap:offsite:identity:arn for a tenant)",
            f"by hand: bound what a compromised backup server can make you store: radosgw-admin quota set "
            f"--quota-scope=bucket --bucket={bucket} --max-size=<bytes> && radosgw-admin quota enable "
            f"--quota-scope=bucket --bucket={bucket}. Ceph RGW 16 does not evaluate the "
            f"s3:object-lock-* condition keys, so the cap of {cap} days on retention is not enforced there: "
            "the quota is the bound",
            "by hand if you need encryption at rest: RGW's SSE-S3 needs a KMS (Vault) configured on the gateway; "
            "the archives are OpenPGP-encrypted either way",
            f"the bucket's default retention is COMPLIANCE {spec.default_retention_days} days (a day more than "
            "retain_days, and with chains their whole life: max_age_days + 1 more): RGW 16 stores multipart "
            "uploads with the default only (tracker 63724), and snap reads "
            "every lock back. Leave snap:offsite:retention_repair off there: RGW 16 evaluates no bound on "
            "PutObjectRetention, and a retain-until past 2106 wraps to the past (the object is unlocked)",
        ]
    if spec.provider == "minio":
        from snap_core.provision.policies import identity_policy  # noqa: PLC0415

        doc = json.dumps(identity_policy(spec), separators=(",", ":"))
        return [
            f"by hand (MinIO attaches policies to users, its bucket policies are for anonymous access): "
            f"mc admin user add ALIAS {name} <secret>; save this as {IDENTITY_POLICY_NAME}.json: {doc} ; "
            f"mc admin policy create ALIAS {IDENTITY_POLICY_NAME} {IDENTITY_POLICY_NAME}.json; "
            f"mc admin policy attach ALIAS {IDENTITY_POLICY_NAME} --user {name}",
            f"by hand: mc quota set ALIAS/{bucket} --size <bytes> bounds what a compromised backup server "
            "can make you store",
            "untested here (no MinIO on the test machine): check with a test upload, then salt-run snap.verify_offsite",
        ]
    return []
