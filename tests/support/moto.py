"""A real S3 API on 127.0.0.1: moto's server, with IAM enforcement on.

`Moto` starts moto's server (tests/support/moto_server.py) on a free loopback port and stops it.
`setup()` creates an Object Lock bucket, a Glacier vault, an admin user and a
put-only user (what the backup server needs and nothing more), writes a
shared credentials file with profiles [admin] and [putonly], then switches
IAM enforcement on. The Rust tests of snap-offsite run the same setup through
rust/snap-offsite/tests/moto_setup.py.

moto does not judge everything (FIELD-NOTES): it does not lock multipart
uploads, lets COMPLIANCE retention be shortened, ignores bucket-policy
principals. Tests say where they lean on it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

from tests.support.moto_server import MotoServer, enable_auth

ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def put_only_policy(bucket: str, prefix: str) -> dict:
    """Create objects and multipart uploads under ``prefix``, abort its own
    incomplete uploads (AbortMultipartUpload cannot delete a completed
    object), list incomplete uploads and objects. Nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                # GetObjectRetention and PutObjectRetention: snap reads every
                # lock back and sets it where the server dropped it (moto does
                # for multipart uploads); COMPLIANCE can only be extended.
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
                           "s3:GetObjectRetention", "s3:PutObjectRetention"],
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
            },
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucketMultipartUploads", "s3:ListBucket"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
        ],
    }


def setup(endpoint, bucket, vault, prefix, creds_path, auth=True) -> dict:
    import boto3

    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
              aws_secret_access_key="testing")  # fmt: skip
    boto3.client("s3", **kw).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    boto3.client("glacier", **kw).create_vault(vaultName=vault)
    iam = boto3.client("iam", **kw)
    keys = {}
    for user, policy in (("snap-admin", ADMIN_POLICY), ("snap-putonly", put_only_policy(bucket, prefix))):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=f"{user}-policy", PolicyDocument=json.dumps(policy))
        k = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = (k["AccessKeyId"], k["SecretAccessKey"])
    with open(creds_path, "w") as handle:
        for profile, user in (("admin", "snap-admin"), ("putonly", "snap-putonly")):
            key_id, secret = keys[user]
            handle.write(f"[{profile}]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n\n")
    os.chmod(creds_path, 0o600)
    if not auth:
        return {"auth": {"status": "ok", "enforced": False}, "users": sorted(keys)}
    return {"auth": enable_auth(endpoint), "users": sorted(keys)}


class Moto:
    """moto's server with snap's bucket, vault and identities, for a test module or the demo."""

    BUCKET = "snap-archives"
    VAULT = "snap-vault"

    def __init__(self, prefix="snap/backup1"):
        self.prefix = prefix
        self.server = None
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="snap-moto-"))
        self.credentials = self.dir / "credentials"

    @property
    def port(self):
        return self.server.port

    @property
    def endpoint(self):
        return self.server.endpoint

    def start(self, auth=True):
        self.server = MotoServer()
        setup(self.endpoint, self.BUCKET, self.VAULT, self.prefix, self.credentials, auth=auth)
        return self

    def stop(self):
        if self.server:
            self.server.stop()
            self.server = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def client(self, profile="admin", service="s3", endpoint=None):
        """A boto3 client as ``profile`` (admin or putonly) of the credentials file."""
        import configparser

        import boto3

        creds = configparser.ConfigParser()
        creds.read(self.credentials)
        return boto3.client(
            service,
            endpoint_url=endpoint or self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=creds[profile]["aws_access_key_id"],
            aws_secret_access_key=creds[profile]["aws_secret_access_key"],
        )

    def add_read_only_identity(self) -> dict:
        """A read-only identity (all a restore needs: get, restore from a
        Glacier class, list, read the retention) in a credentials file of its
        own; returns the target settings that use it."""
        bucket = f"arn:aws:s3:::{self.BUCKET}"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:RestoreObject",
                                               "s3:GetObjectRetention"], "Resource": f"{bucket}/*"},
                # ListBucketVersions: readers take each manifest at its first version.
                {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions"], "Resource": bucket},
            ],
        }  # fmt: skip
        iam = self.client("admin", "iam")
        iam.create_user(UserName="snap-restore")
        iam.put_user_policy(UserName="snap-restore", PolicyName="read", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="snap-restore")["AccessKey"]
        path = self.dir / "restore-credentials"
        path.write_text(f"[restore]\naws_access_key_id = {key['AccessKeyId']}\naws_secret_access_key = {key['SecretAccessKey']}\n")
        path.chmod(0o600)
        return self.target(profile="restore", credentials_file=str(path))

    def target(self, profile="putonly", endpoint=None, **extra) -> dict:
        """Off-site target settings for snap (credentials through the AWS chain: a profile)."""
        return {
            "bucket": self.BUCKET,
            "region": "us-east-1",
            "endpoint_url": endpoint or self.endpoint,
            "profile": profile,
            **{"credentials_file": str(self.credentials), **extra},
        }
