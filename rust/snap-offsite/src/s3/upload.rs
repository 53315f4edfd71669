//! Uploads: the multipart writer's S3 backend and single-request puts, each
//! carrying its lock, storage class, checksum and `If-None-Match: *`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode, StorageClass,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use snap_core::{Error, ErrorKind, Progress, Result};

use super::{META_DESCRIPTION, META_SHA256, S3Target, check_key, class_refused};
use crate::parts::{
    PartBackend, PartDone, PartFuture, PartWriter, Summary, growing_part_size, sdk_retried,
    to_sdk_time,
};
use crate::{ArchiveTarget, ArchiveWriter, IncompleteUpload, PutOptions, UploadResult};

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
            }))
            .map_err(|e| class_refused(&self.class, e))?;
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
            .send((retries, backoff), &what, || build().send());
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
            Err(e) => return Err(class_refused(&class, e)),
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

    pub(super) fn writer<'a>(
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

    pub(super) fn put_small_object(
        &self,
        key: &str,
        bytes: &[u8],
        options: &PutOptions,
    ) -> Result<UploadResult> {
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
}
