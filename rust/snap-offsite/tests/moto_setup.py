"""Set up a moto server for snap-offsite's integration tests.

Run by the Rust tests with the interpreter from SNAP_TEST_PYTHON (default
python3): creates an Object Lock bucket, a vault, an admin IAM user and a
put-only IAM user, writes an AWS shared credentials file with the profiles
[admin] and [putonly], then switches moto's IAM enforcement on
(POST /moto-api/reset-auth with body 0). Prints a JSON summary.

Usage: moto_setup.py ENDPOINT BUCKET VAULT PREFIX CREDENTIALS_FILE [noauth]

With `noauth` IAM enforcement stays off: moto 5.2.5 rejects the signature of
Glacier GET requests (ListJobs, DescribeJob, GetJobOutput) once auth is on,
from boto3 as from the Rust SDK.
"""

import json
import sys
import urllib.request

import boto3

endpoint, bucket, vault, prefix, creds_path = sys.argv[1:6]
auth = sys.argv[6:7] != ["noauth"]
kw = dict(
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
s3 = boto3.client("s3", **kw)
iam = boto3.client("iam", **kw)
glacier = boto3.client("glacier", **kw)

s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
glacier.create_vault(vaultName=vault)

admin_policy = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# What the backup server's identity needs, and nothing more: create objects
# and multipart uploads under its prefix, abort its own incomplete uploads
# (harmless: AbortMultipartUpload cannot delete a completed object), list
# incomplete uploads and objects under its prefix.
put_only_policy = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
        },
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucketMultipartUploads", "s3:ListBucket"],
            "Resource": f"arn:aws:s3:::{bucket}",
        },
    ],
}

keys = {}
for user, policy in (("snap-admin", admin_policy), ("snap-putonly", put_only_policy)):
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user, PolicyName=f"{user}-policy", PolicyDocument=json.dumps(policy)
    )
    k = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = (k["AccessKeyId"], k["SecretAccessKey"])

with open(creds_path, "w") as f:
    for profile, user in (("admin", "snap-admin"), ("putonly", "snap-putonly")):
        key_id, secret = keys[user]
        f.write(
            f"[{profile}]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n\n"
        )

if not auth:
    print(json.dumps({"auth": {"status": "ok", "enforced": False}, "users": sorted(keys)}))
    sys.exit(0)

# Flask reads a form-encoded body as form fields, so say text/plain.
req = urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth",
    data=b"0",
    method="POST",
    headers={"Content-Type": "text/plain"},
)
with urllib.request.urlopen(req) as r:
    answer = json.loads(r.read())
print(json.dumps({"auth": answer, "users": sorted(keys)}))
