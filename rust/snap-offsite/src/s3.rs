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
//! `s3:RestoreObject` and `s3:ListBucket`.
//!
//! A multipart upload creates nothing until CompleteMultipartUpload; a killed
//! run leaves only an incomplete upload, which [`abort_stale`](crate::abort_stale)
//! removes on the next run. Resuming it is impossible by design: the archive
//! is encrypted with a fresh session key each run, so the bytes of a new run
//! never continue the old ones.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, GlacierJobParameters,
    ObjectLockLegalHoldStatus, ObjectLockMode, RestoreRequest, StorageClass, Tier,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use snap_core::{Error, ErrorKind, Progress, Result};

use crate::config::{Shared, load};
use crate::error::{sdk_error, service_code};
use crate::parts::{
    PartBackend, PartDone, PartFuture, PartWriter, Summary, backoff_delay, from_sdk_time,
    growing_part_size, sdk_retried, to_sdk_time, with_retries,
};
use crate::{
    ArchiveTarget, ArchiveWriter, IncompleteUpload, ListEntry, ObjectInfo, PutOptions,
    RetrievalStatus, RetrievalTier, TargetConfig, TargetKind, UploadResult, retain_until,
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

fn is_archival(class: Option<&str>) -> bool {
    matches!(class, Some("GLACIER" | "DEEP_ARCHIVE"))
}

/// Parse `x-amz-restore`: `ongoing-request="true"` or
/// `ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`.
fn parse_restore(header: Option<&str>, class: Option<&str>) -> RetrievalStatus {
    match header {
        Some(h) if h.contains("ongoing-request=\"true\"") => RetrievalStatus::InProgress,
        Some(h) if h.contains("ongoing-request=\"false\"") => {
            let expires = h.split("expiry-date=\"").nth(1).and_then(|rest| {
                let date = rest.split('"').next()?;
                aws_smithy_types::DateTime::from_str(
                    date,
                    aws_smithy_types::date_time::Format::HttpDate,
                )
                .ok()
                .and_then(|d| SystemTime::try_from(d).ok())
            });
            RetrievalStatus::Ready { expires }
        }
        _ if is_archival(class) => RetrievalStatus::NotRequested,
        _ => RetrievalStatus::Immediate,
    }
}

struct S3Upload<'a> {
    t: &'a S3Target,
    client: Client,
    rt: Arc<tokio::runtime::Runtime>,
    bucket: String,
    key: String,
    options: PutOptions,
    until: SystemTime,
    class: StorageClass,
    base_part: u64,
    retries: u32,
    backoff: Duration,
}

impl S3Upload<'_> {
    fn target(&self) -> &S3Target {
        self.t
    }
}

impl PartBackend for S3Upload<'_> {
    fn object(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn part_size(&self, number: u64) -> u64 {
        growing_part_size(self.base_part, self.options.size_hint, number)
    }

    fn start(&self) -> Result<String> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(to_sdk_time(self.until))
            .storage_class(self.class.clone())
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        if let Some(ct) = &self.options.content_type {
            req = req.content_type(ct);
        }
        if let Some(d) = &self.options.description {
            req = req.metadata(META_DESCRIPTION, d);
        }
        let what = format!("starting the multipart upload of {}", self.object());
        let out = self
            .rt
            .block_on(sdk_retried(self.retries, self.backoff, &what, || {
                req.clone().send()
            }))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::internal(format!("{what}: no upload id in the answer")))
    }

    fn part(&self, upload_id: &str, number: u64, _offset: u64, data: Bytes) -> PartFuture {
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = self.key.clone();
        let upload_id = upload_id.to_owned();
        let (retries, backoff) = (self.retries, self.backoff);
        Box::pin(async move {
            let len = data.len() as u64;
            let checksum = B64.encode(Sha256::digest(&data));
            let what = format!("uploading part {number} ({len} bytes) of s3://{bucket}/{key}");
            let out = sdk_retried(retries, backoff, &what, || {
                client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number as i32)
                    .content_length(len as i64)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .checksum_sha256(&checksum)
                    .body(ByteStream::from(data.clone()))
                    .send()
            })
            .await?;
            Ok(PartDone {
                number,
                len,
                etag: out.e_tag().map(str::to_owned),
                checksum: Some(checksum),
            })
        })
    }

    fn complete(
        &self,
        upload_id: &str,
        parts: &[PartDone],
        summary: &Summary,
    ) -> Result<UploadResult> {
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                let mut b = CompletedPart::builder().part_number(p.number as i32);
                if let Some(e) = &p.etag {
                    b = b.e_tag(e);
                }
                if let Some(c) = &p.checksum {
                    b = b.checksum_sha256(c);
                }
                b.build()
            })
            .collect();
        let req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            );
        let what = format!("completing the multipart upload of {}", self.object());
        let res = self
            .rt
            .block_on(sdk_retried(self.retries, self.backoff, &what, || {
                req.clone().send()
            }));
        let (version_id, etag) = match res {
            Ok(out) => (
                out.version_id().map(str::to_owned),
                out.e_tag().map(str::to_owned),
            ),
            Err(e)
                if e.kind() == ErrorKind::AlreadyExists
                    && self.target().existing_is_ours(
                        &self.key,
                        summary.size,
                        None,
                        parts.len(),
                    ) =>
            {
                let info = self.target().head(&self.key)?;
                (info.version_id, info.etag)
            }
            Err(e) => return Err(e),
        };
        Ok(UploadResult {
            key: self.key.clone(),
            size: summary.size,
            sha256: summary.sha256_hex.clone(),
            tree_hash: None,
            version_id,
            etag,
            parts: parts.len() as u32,
            part_size: summary.first_part_size,
            retain_until: Some(self.until),
            storage_class: Some(self.class.as_str().to_owned()),
        })
    }

    fn single(&self, data: Bytes, summary: &Summary) -> Result<UploadResult> {
        self.target().put_bytes(
            &self.key,
            data,
            &self.options,
            self.until,
            self.class.clone(),
            summary,
        )
    }

    fn abort(&self, upload_id: &str) -> Result<()> {
        self.target().abort_incomplete(&IncompleteUpload {
            key: self.key.clone(),
            upload_id: upload_id.to_owned(),
            initiated: None,
        })
    }

    fn wants_tree_hash(&self) -> bool {
        false
    }
}

impl S3Target {
    fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        options: &PutOptions,
        until: SystemTime,
        class: StorageClass,
        summary: &Summary,
    ) -> Result<UploadResult> {
        let checksum = B64.encode(hex::decode(&summary.sha256_hex).unwrap_or_default());
        let build = || {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.config.bucket)
                .key(key)
                .if_none_match("*")
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(to_sdk_time(until))
                .storage_class(class.clone())
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(&checksum)
                .content_length(data.len() as i64)
                .metadata(META_SHA256, &summary.sha256_hex)
                .body(ByteStream::from(data.clone()));
            if let Some(ct) = &options.content_type {
                req = req.content_type(ct);
            }
            if let Some(d) = &options.description {
                req = req.metadata(META_DESCRIPTION, d);
            }
            req
        };
        let what = format!("uploading {}", self.url(key));
        let (retries, backoff) = self.retries();
        let res = self
            .shared
            .rt
            .block_on(sdk_retried(retries, backoff, &what, || build().send()));
        let (version_id, etag) = match res {
            Ok(out) => (
                out.version_id().map(str::to_owned),
                out.e_tag().map(str::to_owned),
            ),
            Err(e)
                if e.kind() == ErrorKind::AlreadyExists
                    && self.existing_is_ours(key, summary.size, Some(&summary.sha256_hex), 0) =>
            {
                let info = self.head(key)?;
                (info.version_id, info.etag)
            }
            Err(e) => return Err(e),
        };
        Ok(UploadResult {
            key: key.to_owned(),
            size: summary.size,
            sha256: summary.sha256_hex.clone(),
            tree_hash: None,
            version_id,
            etag,
            parts: 0,
            part_size: 0,
            retain_until: Some(until),
            storage_class: Some(class.as_str().to_owned()),
        })
    }
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
        check_key(key)?;
        let (until, class) = self.lock_for(options)?;
        let upload = S3Upload {
            t: self,
            client: self.client.clone(),
            rt: self.shared.rt.clone(),
            bucket: self.config.bucket.clone(),
            key: key.to_owned(),
            options: options.clone(),
            until,
            class,
            base_part: self.config.part_size,
            retries: self.config.part_retries,
            backoff: self.config.retry_backoff,
        };
        Ok(Box::new(PartWriter::new(
            upload,
            self.shared.rt.clone(),
            progress,
            self.config.max_in_flight,
        )))
    }

    fn put_small(&self, key: &str, bytes: &[u8], options: &PutOptions) -> Result<UploadResult> {
        check_key(key)?;
        let (until, class) = self.lock_for(options)?;
        let summary = Summary {
            size: bytes.len() as u64,
            sha256_hex: hex::encode(Sha256::digest(bytes)),
            tree_hash: None,
            first_part_size: 0,
        };
        self.put_bytes(
            key,
            Bytes::copy_from_slice(bytes),
            options,
            until,
            class,
            &summary,
        )
    }

    fn head(&self, key: &str) -> Result<ObjectInfo> {
        let what = format!("looking up {}", self.url(key));
        let (retries, backoff) = self.retries();
        let out = self
            .shared
            .rt
            .block_on(sdk_retried(retries, backoff, &what, || {
                self.client
                    .head_object()
                    .bucket(&self.config.bucket)
                    .key(key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
            }))?;
        let class = out.storage_class().map(|c| c.as_str().to_owned());
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            lock_mode: out.object_lock_mode().map(|m| m.as_str().to_owned()),
            retain_until: out.object_lock_retain_until_date().and_then(from_sdk_time),
            legal_hold: out
                .object_lock_legal_hold_status()
                .map(|s| *s == ObjectLockLegalHoldStatus::On),
            retrieval: parse_restore(out.restore(), class.as_deref()),
            storage_class: class,
            checksum_sha256: out.checksum_sha256().map(str::to_owned),
            version_id: out.version_id().map(str::to_owned),
            etag: out.e_tag().map(str::to_owned),
            last_modified: out.last_modified().and_then(from_sdk_time),
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        let mut entries = Vec::new();
        let mut token: Option<String> = None;
        let (retries, backoff) = self.retries();
        let what = format!("listing s3://{}/{prefix}", self.config.bucket);
        loop {
            let out = self
                .shared
                .rt
                .block_on(sdk_retried(retries, backoff, &what, || {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.config.bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.clone())
                        .send()
                }))?;
            for o in out.contents() {
                entries.push(ListEntry {
                    key: o.key().unwrap_or_default().to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    storage_class: o.storage_class().map(|c| c.as_str().to_owned()),
                    last_modified: o.last_modified().and_then(from_sdk_time),
                });
            }
            match (out.is_truncated(), out.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    fn list_incomplete(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        let (retries, backoff) = self.retries();
        let what = format!(
            "listing incomplete uploads under s3://{}/{prefix}",
            self.config.bucket
        );
        loop {
            let out = self
                .shared
                .rt
                .block_on(sdk_retried(retries, backoff, &what, || {
                    self.client
                        .list_multipart_uploads()
                        .bucket(&self.config.bucket)
                        .prefix(prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                }))?;
            for u in out.uploads() {
                uploads.push(IncompleteUpload {
                    key: u.key().unwrap_or_default().to_owned(),
                    upload_id: u.upload_id().unwrap_or_default().to_owned(),
                    initiated: u.initiated().and_then(from_sdk_time),
                });
            }
            if out.is_truncated() == Some(true) {
                key_marker = out.next_key_marker().map(str::to_owned);
                id_marker = out.next_upload_id_marker().map(str::to_owned);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(uploads)
    }

    fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        let what = format!(
            "aborting the incomplete upload {} of {}",
            upload.upload_id,
            self.url(&upload.key)
        );
        let (retries, backoff) = self.retries();
        let res = self
            .shared
            .rt
            .block_on(sdk_retried(retries, backoff, &what, || {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(&upload.key)
                    .upload_id(&upload.upload_id)
                    .send()
            }));
        match res {
            Ok(_) => Ok(()),
            // Already gone (aborted by a retry or by someone else): fine.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
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

impl S3Target {
    fn get_inner(
        &self,
        key: &str,
        version_id: Option<&str>,
        offset: u64,
        out: &mut dyn Write,
        progress: &Progress,
    ) -> Result<u64> {
        let (retries, backoff) = self.retries();
        let url = match version_id {
            Some(v) => format!("{} (version {v})", self.url(key)),
            None => self.url(key),
        };
        self.shared.rt.block_on(async {
            let mut pos = offset;
            let mut written = 0u64;
            let mut etag: Option<String> = None;
            let mut attempt = 0u32;
            loop {
                let mut req = self
                    .client
                    .get_object()
                    .bucket(&self.config.bucket)
                    .key(key)
                    .set_version_id(version_id.map(str::to_owned));
                if pos > 0 {
                    req = req.range(format!("bytes={pos}-"));
                }
                if let Some(e) = &etag {
                    // The object cannot change (locked, no overwrite), but be sure.
                    req = req.if_match(e);
                }
                let what = format!("reading {url} from byte {pos}");
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        if pos > 0 && service_code(&e) == Some("InvalidRange") {
                            // Nothing left after `pos`: the file was complete.
                            return Ok(written);
                        }
                        let err = sdk_error(&what, e);
                        if err.kind() == ErrorKind::Network && attempt < retries {
                            tokio::time::sleep(backoff_delay(backoff, attempt)).await;
                            attempt += 1;
                            continue;
                        }
                        if err.kind() == ErrorKind::NotReady {
                            return Err(err.context(format!(
                                "{url} is in an archival storage class: request a retrieval first"
                            )));
                        }
                        return Err(err);
                    }
                };
                if etag.is_none() {
                    etag = resp.e_tag().map(str::to_owned);
                }
                let expected_end = pos + resp.content_length().unwrap_or(0).max(0) as u64;
                let mut body = resp.body;
                let dropped = loop {
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            out.write_all(&chunk)
                                .map_err(|e| crate::error::error_from_io(e).context(format!("writing {url}")))?;
                            let n = chunk.len() as u64;
                            pos += n;
                            written += n;
                            progress.add(n);
                            attempt = 0;
                        }
                        Some(Err(e)) => break Some(e.to_string()),
                        None if pos < expected_end => {
                            break Some(format!("body ended at byte {pos} of {expected_end}"));
                        }
                        None => return Ok(written),
                    }
                };
                if let Some(reason) = dropped {
                    if attempt >= retries {
                        return Err(Error::new(
                            ErrorKind::Network,
                            format!(
                                "reading {url}: connection dropped at byte {pos} ({reason}); gave up after {} attempts",
                                attempt + 1
                            ),
                        ));
                    }
                    tokio::time::sleep(backoff_delay(backoff, attempt)).await;
                    attempt += 1;
                }
            }
        })
    }

    fn request_retrieval_inner(
        &self,
        key: &str,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<RetrievalStatus> {
        let info = self.head(key)?;
        match info.retrieval {
            RetrievalStatus::Immediate | RetrievalStatus::InProgress => return Ok(info.retrieval),
            _ => {}
        }
        let params = GlacierJobParameters::builder()
            .tier(Tier::from(tier.as_str()))
            .build()
            .map_err(|e| Error::internal(format!("building a restore request: {e}")))?;
        let request = RestoreRequest::builder()
            .days(days.max(1) as i32)
            .glacier_job_parameters(params)
            .build();
        let what = format!("requesting a retrieval of {}", self.url(key));
        let (retries, backoff) = self.retries();
        let res = self.shared.rt.block_on(with_retries(retries, backoff, || {
            let req = self
                .client
                .restore_object()
                .bucket(&self.config.bucket)
                .key(key)
                .restore_request(request.clone());
            let what = &what;
            async move {
                match req.send().await {
                    Ok(_) => Ok(false),
                    Err(e) if service_code(&e) == Some("RestoreAlreadyInProgress") => Ok(true),
                    Err(e) => Err(sdk_error(what, e)),
                }
            }
        }))?;
        if res {
            return Ok(RetrievalStatus::InProgress);
        }
        Ok(self.head(key)?.retrieval)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_header() {
        assert_eq!(
            parse_restore(None, Some("GLACIER")),
            RetrievalStatus::NotRequested
        );
        assert_eq!(parse_restore(None, None), RetrievalStatus::Immediate);
        assert_eq!(
            parse_restore(Some("ongoing-request=\"true\""), Some("GLACIER")),
            RetrievalStatus::InProgress
        );
        let r = parse_restore(
            Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""),
            Some("GLACIER"),
        );
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_356_048_000);
        assert_eq!(
            r,
            RetrievalStatus::Ready {
                expires: Some(expected)
            }
        );
    }

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
