#!/usr/bin/env python3
"""Upload one file to the benchmark's S3 API, the reference way or snap's.

    s3_upload.py --with boto3|snap FILE KEY

boto3: ``upload_file`` (s3transfer: 8 MiB parts, 10 threads; what
``aws s3 cp`` does), storage class GLACIER, no Object Lock (the original
scripts had none). snap: ``OffsiteTarget.put_file`` (snap-offsite: the
part size and parallelism snap's archive uses, Object Lock COMPLIANCE,
If-None-Match, SHA-256 part checksums). Both as the put-only identity.

Environment: S3_ENDPOINT, S3_BUCKET, S3_CREDENTIALS (a shared credentials
file), S3_PROFILE.
"""

import argparse
import configparser
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--with", dest="tool", choices=["boto3", "snap"], required=True)
    ap.add_argument("file")
    ap.add_argument("key")
    args = ap.parse_args()
    endpoint, bucket = os.environ["S3_ENDPOINT"], os.environ["S3_BUCKET"]
    creds_file, profile = os.environ["S3_CREDENTIALS"], os.environ.get("S3_PROFILE", "putonly")
    if args.tool == "boto3":
        import boto3

        creds = configparser.ConfigParser()
        creds.read(creds_file)
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=creds[profile]["aws_access_key_id"],
            aws_secret_access_key=creds[profile]["aws_secret_access_key"],
        )  # fmt: skip
        s3.upload_file(args.file, bucket, args.key, ExtraArgs={"StorageClass": "GLACIER"})
    else:
        import snap_core

        target = snap_core.OffsiteTarget({"bucket": bucket, "region": "us-east-1", "endpoint_url": endpoint,
                                          "profile": profile, "credentials_file": creds_file})  # fmt: skip
        target.put_file(args.file, args.key, storage_class="GLACIER", retain_days=100)


if __name__ == "__main__":
    main()
