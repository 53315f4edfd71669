"""moto's server with the two Object Lock reads it lacks, for snap's lock read-back.

moto 5.2.5 has no GetObjectRetention at all (``GET ?retention`` falls through
to GetObject and answers 500), and its IAM counts PutObjectRetention as
``s3:PutObject``. snap reads every lock back with GetObjectRetention (the
only read of a lock that reveals nothing of the object, so the put-only
identity may have it), so against plain moto every archive would fail.
This launcher (``python -m tests.support.moto_retention -H HOST -p PORT``,
what tests/support/moto_server.py runs) adds, from the lock fields moto
already stores with every object version:

- ``GET ?retention`` answering like S3 (``Retention`` XML, or
  ``NoSuchObjectLockConfiguration`` for a version without a lock), judged by
  IAM as ``s3:GetObjectRetention``;
- ``PUT ?retention`` judged by IAM as ``s3:PutObjectRetention``.

Nothing else changes: moto still stores multipart uploads without their lock
and still lets COMPLIANCE be shortened (FIELD-NOTES). Ceph RGW and LocalStack
implement both reads themselves; the tests run against them too.
"""

from __future__ import annotations

import sys


def patch() -> None:
    from moto.s3 import responses
    from moto.s3.exceptions import S3ClientError

    class NoSuchObjectLockConfiguration(S3ClientError):
        code = "NoSuchObjectLockConfiguration"

        def __init__(self) -> None:
            super().__init__(
                "NoSuchObjectLockConfiguration", "The specified object does not have a ObjectLock configuration"
            )

    responses.ACTION_MAP["KEY"]["GET"]["retention"] = "GetObjectRetention"
    responses.ACTION_MAP["KEY"]["PUT"]["retention"] = "PutObjectRetention"
    original = responses.S3Response._key_response_get

    def key_response_get(self, query, key_name):
        if "retention" not in query:
            return original(self, query, key_name)
        self._set_action("KEY", "GET", query)
        self._authenticate_and_authorize_s3_action(bucket_name=self.bucket_name, key_name=key_name)
        key, _ = self._get_key(validate_storage_class=False)
        if not (key.lock_mode and key.lock_until):
            raise NoSuchObjectLockConfiguration()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Mode>{key.lock_mode}</Mode><RetainUntilDate>{key.lock_until}</RetainUntilDate></Retention>"
        )
        headers = self._get_cors_headers_other()
        headers["Content-Type"] = "application/xml"
        return 200, headers, body

    responses.S3Response._key_response_get = key_response_get


if __name__ == "__main__":
    patch()
    from moto.server import main

    main(sys.argv[1:])
