//! S3 with Object Lock: the default off-site target.
//!
//! Every object snap writes (archive or manifest) carries, in the request
//! that creates it:
//!
//! - `x-amz-object-lock-mode: COMPLIANCE` and a retain-until date of at least
//!   90 days + 1 day ([`retain_until`](crate::retain_until));
//! - its storage class (archives GLACIER, manifests STANDARD by default);
//! - `If-None-Match: *` on PutObject and CompleteMultipartUpload, so an
//!   existing object is never replaced;
//! - a SHA-256 checksum (`x-amz-checksum-sha256`; S3 requires a checksum or
//!   Content-MD5 on uploads with Object Lock headers). SHA-256 rather than
//!   CRC64NVME: moto (the emulator the tests run against) computes CRC64NVME
//!   only with the optional `awscrt` package and silently falls back to CRC32
//!   without it, while SHA-256 is plain hashlib there.
//!
//! What the backup server's identity needs (see tests/moto_setup.py):
//! `s3:PutObject` on `bucket/prefix/*` (this also covers CreateMultipartUpload,
//! UploadPart and CompleteMultipartUpload), `s3:AbortMultipartUpload` (harmless:
//! it cannot touch a completed object) and, for cleaning up after a killed run,
//! `s3:ListBucketMultipartUploads` (plus `s3:ListBucket` for `list`) on the
//! bucket. It must not get `s3:GetObject`, `s3:DeleteObject*`,
//! `s3:PutObjectRetention`, `s3:PutObjectLegalHold`, `s3:BypassGovernanceRetention`
//! or any `s3:PutBucket*`/`s3:DeleteBucket*`. A PutObject without
//! `If-None-Match` on an existing key adds a newer version (the locked one
//! stays): a bucket policy can refuse such writes with the `s3:if-none-match`
//! condition key, and restore reads the version ids its manifests recorded
//! ([`ArchiveTarget::get_version`](crate::ArchiveTarget::get_version)). The
//! restore identity needs `s3:GetObject`, `s3:GetObjectVersion`,
//! `s3:RestoreObject`, `s3:ListBucket` and `s3:ListBucketVersions` (readers
//! take each manifest at its first version: see `snap_restore::list`).
//!
//! A multipart upload creates nothing until CompleteMultipartUpload; a killed
//! run leaves only an incomplete upload, which [`abort_stale`](crate::abort_stale)
//! removes on the next run. Resuming it is impossible by design: the archive
//! is encrypted with a fresh session key each run, so the bytes of a new run
//! never continue the old ones.

mod read;
mod retention;
mod upload;

use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::types::StorageClass;
use snap_core::{Error, Progress, Result};

use crate::config::{Shared, load};
use crate::{
    ArchiveTarget, ArchiveWriter, IncompleteUpload, ListEntry, ObjectInfo, PutOptions, Retention,
    RetrievalStatus, RetrievalTier, TargetConfig, TargetKind, UploadResult, VersionEntry,
    retain_until,
};

/// User metadata holding the whole-object SHA-256 of single-request uploads.
pub const META_SHA256: &str = "snap-sha256";
/// User metadata holding the description.
pub const META_DESCRIPTION: &str = "snap-description";

/// An S3 bucket with Object Lock enabled.
pub struct S3Target {
    config: TargetConfig,
    shared: Shared,
    client: Client,
}

impl S3Target {
    pub fn new(config: TargetConfig) -> Result<Self> {
        if config.kind != TargetKind::S3 {
            return Err(Error::invalid_input("S3Target needs a target of kind s3"));
        }
        let shared = load(&config)?;
        let s3conf = aws_sdk_s3::config::Builder::from(&shared.sdk)
            .force_path_style(config.path_style())
            // Checksums as headers, computed only where snap gives them or
            // the API requires one: uploads carry the SHA-256 snap computes
            // itself (S3 requires a checksum with Object Lock headers);
            // PutObjectRetention gets the SDK's CRC32. Measured against
            // Ceph RGW 16, moto and LocalStack: no aws-chunked trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let client = Client::from_conf(s3conf);
        Ok(S3Target {
            config,
            shared,
            client,
        })
    }

    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.config.bucket)
    }

    fn retries(&self) -> (u32, Duration) {
        (self.config.part_retries, self.config.retry_backoff)
    }

    /// Check options before any request.
    fn lock_for(&self, options: &PutOptions) -> Result<(SystemTime, StorageClass)> {
        let until = retain_until(SystemTime::now(), options.retain_days)?;
        let class = storage_class(&options.storage_class)?;
        Ok((until, class))
    }

    /// After a PutObject/Complete answered 412: is the object there ours (a
    /// retried request whose first attempt succeeded)? Keys carry 64 random
    /// bits, so anything else there is a real conflict.
    fn existing_is_ours(
        &self,
        key: &str,
        size: u64,
        sha256_hex: Option<&str>,
        parts: usize,
    ) -> bool {
        match self.head(key) {
            Ok(info) => {
                if info.size != size {
                    return false;
                }
                match sha256_hex {
                    Some(sha) => {
                        let meta = self.shared.rt.block_on(
                            self.client
                                .head_object()
                                .bucket(&self.config.bucket)
                                .key(key)
                                .send(),
                        );
                        meta.ok()
                            .and_then(|m| m.metadata().and_then(|md| md.get(META_SHA256).cloned()))
                            .is_some_and(|v| v == sha)
                    }
                    None => info
                        .etag
                        .as_deref()
                        .is_some_and(|e| e.trim_matches('"').ends_with(&format!("-{parts}"))),
                }
            }
            Err(_) => false,
        }
    }
}

/// Parse a storage class name; unknown names are refused before any request.
pub fn storage_class(name: &str) -> Result<StorageClass> {
    let upper = name.to_ascii_uppercase();
    if StorageClass::values().contains(&upper.as_str()) {
        Ok(StorageClass::from(upper.as_str()))
    } else {
        Err(Error::invalid_input(format!(
            "unknown S3 storage class {name:?} (known: {})",
            StorageClass::values().join(", ")
        )))
    }
}

/// The first request of an upload (CreateMultipartUpload or PutObject)
/// carries the storage class; a server that does not offer it refuses that
/// request before anything is stored (Ceph RGW: a bare `InvalidArgument`,
/// AWS: `InvalidStorageClass`). Say what to change. Nothing is probed
/// beforehand: a probe object would itself be locked for months.
pub(crate) fn class_refused(class: &StorageClass, e: Error) -> Error {
    let text = e.to_string();
    let refused = [": InvalidStorageClass", ": InvalidArgument"]
        .iter()
        .any(|code| text.contains(code));
    if class.as_str() == "STANDARD" || !refused {
        return e;
    }
    Error::invalid_input(format!(
        "storage class {} is not offered by this endpoint; set snap:archive:storage_class \
         (STANDARD is offered by every S3 server; on AWS GLACIER, DEEP_ARCHIVE or GLACIER_IR). \
         Nothing was stored. The server answered: {text}",
        class.as_str()
    ))
}

/// Keys snap writes: not empty, no leading slash, no `.`/`..` segments.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.starts_with('/') || key.len() > 1024 {
        return Err(Error::invalid_input(format!("bad object key {key:?}")));
    }
    if key.split('/').any(|s| s == "." || s == "..") || key.chars().any(char::is_control) {
        return Err(Error::invalid_input(format!("bad object key {key:?}")));
    }
    Ok(())
}

impl ArchiveTarget for S3Target {
    fn describe(&self) -> String {
        format!("s3://{}{}", self.config.bucket, self.config.where_())
    }

    fn create_writer<'a>(
        &'a self,
        key: &str,
        options: &PutOptions,
        progress: &'a Progress,
    ) -> Result<Box<dyn ArchiveWriter + 'a>> {
        self.writer(key, options, progress)
    }

    fn put_small(&self, key: &str, bytes: &[u8], options: &PutOptions) -> Result<UploadResult> {
        self.put_small_object(key, bytes, options)
    }

    fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.head_object(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        self.list_objects(prefix)
    }

    fn list_versions(&self, prefix: &str) -> Result<Vec<VersionEntry>> {
        self.list_object_versions(prefix, false)
    }

    fn key_versions(&self, key: &str) -> Result<Vec<VersionEntry>> {
        self.list_object_versions(key, true)
    }

    fn list_incomplete(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        self.list_uploads(prefix)
    }

    fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        self.abort_upload(upload)
    }

    fn object_url(&self, key: &str) -> String {
        self.url(key)
    }

    fn has_object_lock(&self) -> bool {
        true
    }

    fn retention(&self, key: &str, version_id: Option<&str>) -> Result<Retention> {
        self.get_retention(key, version_id)
    }

    fn set_retention(&self, key: &str, version_id: Option<&str>, until: SystemTime) -> Result<()> {
        self.put_retention(key, version_id, until)
    }

    fn get(&self, key: &str, offset: u64, out: &mut dyn Write, progress: &Progress) -> Result<u64> {
        self.get_inner(key, None, offset, out, progress)
    }

    fn get_version(
        &self,
        key: &str,
        version_id: &str,
        offset: u64,
        out: &mut dyn Write,
        progress: &Progress,
    ) -> Result<u64> {
        self.get_inner(key, Some(version_id), offset, out, progress)
    }

    fn request_retrieval(
        &self,
        key: &str,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<RetrievalStatus> {
        self.request_retrieval_inner(key, days, tier)
    }

    fn retrieval_status(&self, key: &str) -> Result<RetrievalStatus> {
        Ok(self.head(key)?.retrieval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snap_core::ErrorKind;

    #[test]
    fn storage_classes() {
        assert_eq!(storage_class("glacier").unwrap(), StorageClass::Glacier);
        assert_eq!(
            storage_class("DEEP_ARCHIVE").unwrap(),
            StorageClass::DeepArchive
        );
        assert_eq!(
            storage_class("FROZEN").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn keys() {
        assert!(check_key("a/b").is_ok());
        assert!(check_key("/a").is_err());
        assert!(check_key("a/../b").is_err());
        assert!(check_key("").is_err());
    }
}
