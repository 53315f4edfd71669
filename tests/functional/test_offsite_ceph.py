"""Ceph RGW 16 specifics, against the real gateway (tests/support/ceph.py).

- the multipart lock RGW drops (tracker 63724) is caught by snap's read-back:
  the upload fails naming the object without a repair right, and is
  repaired with one;
- a storage class the zone does not define is named, and nothing is stored;
- a retain-until past 2106 wraps to the past and leaves the object unlocked
  (measured): why ``retention_repair`` stays off on Ceph.
"""

from __future__ import annotations

import datetime
import json
import os

import pytest

import snap_core

MIB = 1 << 20


def bucket_for(ceph, name, repair: bool):
    """A lock-enabled bucket with NO default retention, and a policy that lets
    the backup user upload, read locks back and (with ``repair``) set them.
    Without ``repair`` the policy must *deny* PutObjectRetention: in RGW the
    writer owns its objects, and an owner's ACL allows it otherwise (measured)."""
    admin = ceph.client()
    admin.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    actions = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObjectRetention"] + (
        ["s3:PutObjectRetention"] if repair else []
    )
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": [ceph.arn(ceph.BACKUP)]}, "Action": actions,
         "Resource": f"arn:aws:s3:::{name}/*"},
        {"Effect": "Allow", "Principal": {"AWS": [ceph.arn(ceph.BACKUP)]},
         "Action": ["s3:ListBucketMultipartUploads", "s3:ListBucket"], "Resource": f"arn:aws:s3:::{name}"},
        {"Effect": "Allow", "Principal": {"AWS": [ceph.arn(ceph.ADMIN)]}, "Action": ["s3:*"],
         "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]},
    ]}  # fmt: skip
    if not repair:
        policy["Statement"].append({"Effect": "Deny", "Principal": {"AWS": [ceph.arn(ceph.BACKUP)]},
                                    "Action": ["s3:PutObjectRetention"], "Resource": f"arn:aws:s3:::{name}/*"})  # fmt: skip
    admin.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    return admin


@pytest.fixture
def backup_target(ceph, tmp_path):
    creds = ceph.credentials_file(tmp_path / "credentials", {"backup": ceph.BACKUP})

    def target(bucket):
        return snap_core.OffsiteTarget({"bucket": bucket, "region": "us-east-1", "endpoint_url": ceph.endpoint,
                                        "profile": "backup", "credentials_file": str(creds), "part_size": 5 * MIB,
                                        "sdk_max_attempts": 1, "part_retries": 0})  # fmt: skip

    return target


def test_the_multipart_lock_rgw_drops_is_caught_and_fixed(ceph, backup_target, tmp_path, capsys):
    archive = tmp_path / "archive.sqfs.gpg"
    archive.write_bytes(os.urandom(11 * MIB))
    # Without the right to set a retention: the run fails, naming the object.
    admin = bucket_for(ceph, "snap-caught", repair=False)
    key = snap_core.offsite_archive_key("snap", ".sqfs.gpg")
    with pytest.raises(snap_core.IntegrityError) as caught:
        backup_target("snap-caught").put_file(archive, key, storage_class="STANDARD")
    text = str(caught.value)
    for needle in (f"s3://snap-caught/{key}", " version ", "no lock", "AccessDenied", "put-object-retention"):
        assert needle in text, (needle, text)
    version = text.split(" version ")[1].split(" ")[0]
    with pytest.raises(Exception, match="ObjectLockConfigurationNotFoundError"):  # RGW stored it with no lock
        admin.get_object_retention(Bucket="snap-caught", Key=key, VersionId=version)
    # With it: set again, read back, said so.
    bucket_for(ceph, "snap-fixed", repair=True)
    up = backup_target("snap-fixed").put_file(archive, snap_core.offsite_archive_key("snap", ".sqfs.gpg"),
                                              storage_class="STANDARD")  # fmt: skip
    assert up["parts"] == 3 and up["lock"]["status"] == "repaired", up["lock"]
    assert up["lock"]["found"]["mode"] is None and up["lock"]["now"]["mode"] == "COMPLIANCE"
    r = ceph.client().get_object_retention(Bucket="snap-fixed", Key=up["key"], VersionId=up["version_id"])["Retention"]
    assert r["Mode"] == "COMPLIANCE" and r["RetainUntilDate"].timestamp() >= up["retain_until"]
    with capsys.disabled():
        print(f"\nCeph RGW: caught: {text[:160]}...\nCeph RGW: {up['lock']['detail']}")


def test_a_storage_class_the_zone_lacks_is_named_and_nothing_is_stored(ceph, backup_target, tmp_path):
    admin = bucket_for(ceph, "snap-class", repair=False)
    archive = tmp_path / "archive"
    for size in (1 << 10, 7 * MIB):  # a single PutObject, and a multipart upload
        archive.write_bytes(os.urandom(size))
        with pytest.raises(snap_core.InvalidInput) as refused:
            backup_target("snap-class").put_file(archive, snap_core.offsite_archive_key("snap", ".gpg"),
                                                 storage_class="GLACIER")  # fmt: skip
        assert "storage class GLACIER is not offered by this endpoint; set snap:archive:storage_class" in str(
            refused.value
        )
        assert "Nothing was stored" in str(refused.value)
    assert admin.list_object_versions(Bucket="snap-class").get("Versions", []) == []
    assert admin.list_multipart_uploads(Bucket="snap-class").get("Uploads", []) == []


def test_a_retain_until_past_2106_wraps_and_unlocks_on_rgw_16(ceph):
    """Pinned finding (RGW 16.2.15): the date is kept in 32 bits of seconds.
    snap never asks beyond ten years, but a PutObjectRetention right is a way
    to unlock an archive there, and no policy condition bounds it on RGW 16:
    so retention_repair stays off on Ceph (the bucket default covers
    multipart uploads instead). If this starts failing, RGW keeps such dates:
    update docs/OFFSITE.md."""
    admin = ceph.client()
    admin.create_bucket(Bucket="snap-wrap", ObjectLockEnabledForBucket=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    v = admin.put_object(Bucket="snap-wrap", Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                         ObjectLockRetainUntilDate=now + datetime.timedelta(days=30))["VersionId"]  # fmt: skip
    admin.put_object_retention(Bucket="snap-wrap", Key="k", VersionId=v,
                               Retention={"Mode": "COMPLIANCE", "RetainUntilDate": now + datetime.timedelta(days=36500)})  # fmt: skip
    until = admin.get_object_retention(Bucket="snap-wrap", Key="k", VersionId=v)["Retention"]["RetainUntilDate"]
    assert until < now, f"RGW kept a date past 2106 ({until}): the wrap is fixed"
    admin.delete_object(Bucket="snap-wrap", Key="k", VersionId=v)  # the lock is gone
