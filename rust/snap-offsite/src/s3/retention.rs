//! Object Lock retention of one object version: read (GetObjectRetention,
//! the only read of a lock that reveals nothing of the object, so the
//! put-only identity may have it) and set (PutObjectRetention, COMPLIANCE
//! only: it can only ever be extended). `crate::lockcheck` judges them.

use std::time::SystemTime;

use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
use snap_core::Result;

use super::S3Target;
use crate::Retention;
use crate::error::{sdk_error, service_code};
use crate::parts::{from_sdk_time, to_sdk_time, with_retries};

/// What servers answer GetObjectRetention for a version without retention:
/// AWS `NoSuchObjectLockConfiguration`, Ceph RGW 16
/// `ObjectLockConfigurationNotFoundError` (measured).
const NO_RETENTION_CODES: &[&str] = &[
    "NoSuchObjectLockConfiguration",
    "ObjectLockConfigurationNotFoundError",
];

fn version_text(version_id: Option<&str>) -> String {
    version_id.map_or_else(String::new, |v| format!(" version {v}"))
}

impl S3Target {
    pub(super) fn get_retention(&self, key: &str, version_id: Option<&str>) -> Result<Retention> {
        let what = format!(
            "reading the Object Lock retention of {}{} (GetObjectRetention: the identity needs s3:GetObjectRetention)",
            self.url(key),
            version_text(version_id)
        );
        let (retries, backoff) = self.retries();
        self.shared.rt.block_on(with_retries(retries, backoff, || {
            let req = self
                .client
                .get_object_retention()
                .bucket(&self.config.bucket)
                .key(key)
                .set_version_id(version_id.map(str::to_owned));
            let what = &what;
            async move {
                match req.send().await {
                    Ok(out) => {
                        let r = out.retention();
                        Ok(Retention {
                            mode: r.and_then(|r| r.mode()).map(|m| m.as_str().to_owned()),
                            retain_until: r
                                .and_then(|r| r.retain_until_date())
                                .and_then(from_sdk_time),
                        })
                    }
                    Err(e) if service_code(&e).is_some_and(|c| NO_RETENTION_CODES.contains(&c)) => {
                        Ok(Retention::default())
                    }
                    Err(e) => Err(sdk_error(what, e)),
                }
            }
        }))
    }

    pub(super) fn put_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        until: SystemTime,
    ) -> Result<()> {
        let what = format!(
            "setting COMPLIANCE retention on {}{} (PutObjectRetention)",
            self.url(key),
            version_text(version_id)
        );
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::Compliance)
            .retain_until_date(to_sdk_time(until))
            .build();
        let (retries, backoff) = self.retries();
        self.shared
            .send((retries, backoff), &what, || {
                self.client
                    .put_object_retention()
                    .bucket(&self.config.bucket)
                    .key(key)
                    .set_version_id(version_id.map(str::to_owned))
                    .retention(retention.clone())
                    .send()
            })
            .map(|_| ())
    }
}
