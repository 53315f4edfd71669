//! Glacier vaults (the 2012 vault API, closed to new customers since
//! December 2025; kept for accounts that have vaults).
//!
//! A vault archive is identified by the id AWS assigns; snap puts its key in
//! the archive description. Deletion protection is the vault's business (a
//! Vault Lock policy denying `glacier:DeleteArchive`, set up by an admin), not
//! the uploader's: the vault API has no per-archive retention.
//!
//! The SDK adds the per-request `x-amz-sha256-tree-hash` only when it is
//! missing; snap sets it itself on every part and computes the tree hash of
//! the whole archive for CompleteMultipartUpload while the data streams.

use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_sdk_glacier::Client;
use aws_sdk_glacier::operation::list_jobs::ListJobsOutput;
use aws_sdk_glacier::operation::list_multipart_uploads::ListMultipartUploadsOutput;
use aws_sdk_glacier::primitives::ByteStream;
use aws_sdk_glacier::types::{ActionCode, JobParameters, StatusCode};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use snap_core::{Error, ErrorKind, Progress, Result};

mod treehash;
pub use treehash::{
    TREE_CHUNK, TreeHasher, tree_hash, tree_hash_file_hex, tree_hash_hex, tree_hash_of_parts,
};

use crate::config::{Shared, load};
use crate::error::sdk_error;
use crate::listing::every_page;
use crate::parts::{
    Pace, PartBackend, PartDone, PartFuture, PartWriter, Summary, backoff_delay, sdk_retried,
    unless_stopped, within,
};
use crate::{
    ArchiveTarget, ArchiveWriter, IncompleteUpload, ListEntry, MAX_PARTS, MIB, ObjectInfo,
    PutOptions, RetrievalStatus, RetrievalTier, TargetConfig, TargetKind, UploadResult,
};

/// Largest vault part: 4 GiB.
pub const MAX_VAULT_PART: u64 = 4096 * MIB;

/// Vault part size: a power of two MiB from 1 MiB to 4 GiB, at least
/// `configured`, large enough for `size_hint` in 10,000 parts.
pub fn vault_part_size(configured: u64, size_hint: Option<u64>) -> u64 {
    let need = size_hint.map(|s| s.div_ceil(MAX_PARTS)).unwrap_or(0);
    configured
        .max(need)
        .max(MIB)
        .next_power_of_two()
        .min(MAX_VAULT_PART)
}

/// Archive descriptions: printable ASCII, at most 1024 characters.
fn check_description(text: &str) -> Result<()> {
    if text.len() > 1024 || !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(Error::invalid_input(format!(
            "Glacier archive description {text:?} must be printable ASCII of at most 1024 characters"
        )));
    }
    Ok(())
}

/// A Glacier vault.
pub struct GlacierTarget {
    config: TargetConfig,
    shared: Shared,
    client: Client,
}

impl GlacierTarget {
    pub fn new(config: TargetConfig) -> Result<Self> {
        if config.kind != TargetKind::GlacierVault {
            return Err(Error::invalid_input(
                "GlacierTarget needs a target of kind glacier",
            ));
        }
        let shared = load(&config)?;
        let conf = aws_sdk_glacier::config::Builder::from(&shared.sdk).build();
        let client = Client::from_conf(conf);
        Ok(GlacierTarget {
            config,
            shared,
            client,
        })
    }

    fn vault(&self) -> String {
        format!("Glacier vault {}", self.config.bucket)
    }

    fn retries(&self) -> (u32, Duration) {
        (self.config.part_retries, self.config.retry_backoff)
    }

    /// Archive-retrieval jobs of the vault for `archive_id`, newest first.
    fn jobs_for(&self, archive_id: &str) -> Result<Vec<(String, StatusCode)>> {
        let what = format!("listing the jobs of {}", self.vault());
        let start = || {
            self.client
                .list_jobs()
                .account_id(&self.config.account_id)
                .vault_name(&self.config.bucket)
                .into_paginator()
                .send()
        };
        let next = |page: &ListJobsOutput| vault_page(page.job_list().len(), page.marker());
        let mut jobs = every_page(
            &self.shared,
            &self.config,
            &what,
            start,
            next,
            |page, out| {
                let ours = page.job_list().iter().filter(|j| {
                    j.action() == Some(&ActionCode::ArchiveRetrieval)
                        && j.archive_id() == Some(archive_id)
                });
                out.extend(ours.map(|j| {
                    (
                        j.creation_date().unwrap_or_default().to_owned(),
                        j.job_id().unwrap_or_default().to_owned(),
                        j.status_code().cloned().unwrap_or(StatusCode::InProgress),
                    )
                }));
            },
        )?;
        jobs.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(jobs.into_iter().map(|(_, id, s)| (id, s)).collect())
    }
}

struct VaultUpload<'a> {
    t: &'a GlacierTarget,
    description: String,
    part_size: u64,
}

impl PartBackend for VaultUpload<'_> {
    fn object(&self) -> String {
        format!("{} archive {:?}", self.t.vault(), self.description)
    }

    fn part_size(&self, _number: u64) -> u64 {
        // Every part but the last has the size declared at initiation.
        self.part_size
    }

    fn start(&self) -> Result<String> {
        let t = self.t;
        let (retries, backoff) = t.retries();
        let what = format!("starting the multipart upload of {}", self.object());
        let out = t.shared.send((retries, backoff), &what, || {
            t.client
                .initiate_multipart_upload()
                .account_id(&t.config.account_id)
                .vault_name(&t.config.bucket)
                .archive_description(&self.description)
                .part_size(self.part_size.to_string())
                .send()
        })?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::internal(format!("{what}: no upload id in the answer")))
    }

    fn part(&self, upload_id: &str, number: u64, offset: u64, data: Bytes) -> PartFuture {
        let t = self.t;
        let client = t.client.clone();
        let account = t.config.account_id.clone();
        let vault = t.config.bucket.clone();
        let upload_id = upload_id.to_owned();
        let object = self.object();
        let (retries, backoff) = t.retries();
        Box::pin(async move {
            let len = data.len() as u64;
            let hash = hex::encode(tree_hash(&data));
            let range = format!("bytes {}-{}/*", offset, offset + len.max(1) - 1);
            let what = format!("uploading part {number} ({range}) of {object}");
            let out = sdk_retried(retries, backoff, &what, || {
                client
                    .upload_multipart_part()
                    .account_id(&account)
                    .vault_name(&vault)
                    .upload_id(&upload_id)
                    .range(&range)
                    .checksum(&hash)
                    .body(ByteStream::from(data.clone()))
                    .send()
            })
            .await?;
            same_tree_hash(&what, out.checksum(), &hash)?;
            Ok(PartDone {
                number,
                len,
                etag: None,
                checksum: Some(hash),
            })
        })
    }

    fn complete(
        &self,
        upload_id: &str,
        parts: &[PartDone],
        summary: &Summary,
    ) -> Result<UploadResult> {
        let t = self.t;
        let whole = summary
            .tree_hash
            .ok_or_else(|| Error::internal("vault upload without a tree hash"))?;
        // Cross-check the streamed hash against the part hashes.
        let part_hashes: Vec<[u8; 32]> = parts
            .iter()
            .map(|p| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(p.checksum.as_deref().unwrap_or_default(), &mut h)
                    .map(|_| h)
                    .map_err(|e| Error::internal(format!("part tree hash: {e}")))
            })
            .collect::<Result<_>>()?;
        if tree_hash_of_parts(&part_hashes) != whole {
            return Err(Error::internal(format!(
                "{}: the tree hash of the parts differs from the streamed one",
                self.object()
            )));
        }
        let whole_hex = hex::encode(whole);
        let (retries, backoff) = t.retries();
        let what = format!("completing the multipart upload of {}", self.object());
        let out = t.shared.send((retries, backoff), &what, || {
            t.client
                .complete_multipart_upload()
                .account_id(&t.config.account_id)
                .vault_name(&t.config.bucket)
                .upload_id(upload_id)
                .archive_size(summary.size.to_string())
                .checksum(&whole_hex)
                .send()
        })?;
        let archive_id = out
            .archive_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::internal(format!("{what}: no archive id in the answer")))?;
        same_tree_hash(&what, out.checksum(), &whole_hex)?;
        Ok(UploadResult {
            key: archive_id,
            size: summary.size,
            sha256: summary.sha256_hex.clone(),
            tree_hash: Some(whole_hex),
            version_id: None,
            etag: None,
            parts: parts.len() as u32,
            part_size: self.part_size,
            retain_until: None,
            storage_class: None,
        })
    }

    fn single(&self, data: Bytes, summary: &Summary) -> Result<UploadResult> {
        self.t.upload_archive(&self.description, data, summary)
    }

    fn abort(&self, upload_id: &str) -> Result<()> {
        self.t.abort_incomplete(&IncompleteUpload {
            key: self.description.clone(),
            upload_id: upload_id.to_owned(),
            initiated: None,
        })
    }

    fn wants_tree_hash(&self) -> bool {
        true
    }
}

impl GlacierTarget {
    fn upload_archive(
        &self,
        description: &str,
        data: Bytes,
        summary: &Summary,
    ) -> Result<UploadResult> {
        let whole = summary
            .tree_hash
            .ok_or_else(|| Error::internal("vault upload without a tree hash"))?;
        let whole_hex = hex::encode(whole);
        let (retries, backoff) = self.retries();
        let what = format!("uploading archive {description:?} to {}", self.vault());
        let out = self.shared.send((retries, backoff), &what, || {
            self.client
                .upload_archive()
                .account_id(&self.config.account_id)
                .vault_name(&self.config.bucket)
                .archive_description(description)
                .checksum(&whole_hex)
                .body(ByteStream::from(data.clone()))
                .send()
        })?;
        let archive_id = out
            .archive_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::internal(format!("{what}: no archive id in the answer")))?;
        Ok(UploadResult {
            key: archive_id,
            size: summary.size,
            sha256: summary.sha256_hex.clone(),
            tree_hash: Some(whole_hex),
            version_id: None,
            etag: None,
            parts: 0,
            part_size: 0,
            retain_until: None,
            storage_class: None,
        })
    }
}

/// The tree hash Glacier says it computed (when it says one) must be snap's.
fn same_tree_hash(what: &str, theirs: Option<&str>, ours: &str) -> Result<()> {
    match theirs {
        Some(theirs) if theirs != ours => Err(Error::new(
            ErrorKind::Integrity,
            format!("{what}: Glacier computed tree hash {theirs}, snap {ours}"),
        )),
        _ => Ok(()),
    }
}

/// A vault listing's page for [`every_page`]: its `entries`, and more
/// follow when it names a (non-empty) marker.
fn vault_page(entries: usize, marker: Option<&str>) -> (usize, bool, Option<String>) {
    let marker = marker.filter(|m| !m.is_empty()).map(str::to_owned);
    (entries, marker.is_some(), marker)
}

fn unsupported(what: &str) -> Error {
    Error::invalid_input(format!(
        "{what} is not available for Glacier vaults: the vault API has no per-archive \
         lookup or listing (only inventory jobs that take hours)"
    ))
}

impl ArchiveTarget for GlacierTarget {
    fn describe(&self) -> String {
        format!(
            "glacier vault {}{}",
            self.config.bucket,
            self.config.where_()
        )
    }

    fn create_writer<'a>(
        &'a self,
        key: &str,
        options: &PutOptions,
        progress: &'a Progress,
    ) -> Result<Box<dyn ArchiveWriter + 'a>> {
        let description = options
            .description
            .clone()
            .unwrap_or_else(|| key.to_owned());
        check_description(&description)?;
        let upload = VaultUpload {
            t: self,
            description,
            part_size: vault_part_size(self.config.part_size, options.size_hint),
        };
        Ok(Box::new(PartWriter::new(
            upload,
            self.shared.rt.clone(),
            progress,
            self.config.max_in_flight,
        )))
    }

    fn put_small(&self, key: &str, bytes: &[u8], options: &PutOptions) -> Result<UploadResult> {
        let description = options
            .description
            .clone()
            .unwrap_or_else(|| key.to_owned());
        check_description(&description)?;
        let summary = Summary {
            size: bytes.len() as u64,
            sha256_hex: hex::encode(Sha256::digest(bytes)),
            tree_hash: Some(tree_hash(bytes)),
            first_part_size: 0,
        };
        self.upload_archive(&description, Bytes::copy_from_slice(bytes), &summary)
    }

    fn head(&self, _key: &str) -> Result<ObjectInfo> {
        Err(unsupported("looking up an archive"))
    }

    fn list(&self, _prefix: &str) -> Result<Vec<ListEntry>> {
        Err(unsupported("listing archives"))
    }

    fn list_incomplete(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        let what = format!("listing incomplete uploads of {}", self.vault());
        let start = || {
            self.client
                .list_multipart_uploads()
                .account_id(&self.config.account_id)
                .vault_name(&self.config.bucket)
                .into_paginator()
                .send()
        };
        let next = |page: &ListMultipartUploadsOutput| {
            vault_page(page.uploads_list().len(), page.marker())
        };
        every_page(
            &self.shared,
            &self.config,
            &what,
            start,
            next,
            |page, out| {
                let ours = page.uploads_list().iter().filter(|u| {
                    u.archive_description()
                        .unwrap_or_default()
                        .starts_with(prefix)
                });
                out.extend(ours.map(|u| IncompleteUpload {
                    key: u.archive_description().unwrap_or_default().to_owned(),
                    upload_id: u.multipart_upload_id().unwrap_or_default().to_owned(),
                    initiated: u.creation_date().and_then(|d| {
                        aws_smithy_types::DateTime::from_str(
                            d,
                            aws_smithy_types::date_time::Format::DateTime,
                        )
                        .ok()
                        .and_then(|d| SystemTime::try_from(d).ok())
                    }),
                }));
            },
        )
    }

    fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        let (retries, backoff) = self.retries();
        let what = format!(
            "aborting the incomplete upload {} of {}",
            upload.upload_id,
            self.vault()
        );
        let res = self.shared.send((retries, backoff), &what, || {
            self.client
                .abort_multipart_upload()
                .account_id(&self.config.account_id)
                .vault_name(&self.config.bucket)
                .upload_id(&upload.upload_id)
                .send()
        });
        match res {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn get(&self, key: &str, offset: u64, out: &mut dyn Write, progress: &Progress) -> Result<u64> {
        let job = self
            .jobs_for(key)?
            .into_iter()
            .find(|(_, s)| *s == StatusCode::Succeeded)
            .map(|(id, _)| id)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotReady,
                    format!(
                        "archive {key} of {} has no finished retrieval job: request a retrieval first",
                        self.vault()
                    ),
                )
            })?;
        let (retries, backoff) = self.retries();
        let stall = self.config.stall_timeout;
        let name = format!("archive {key} of {}", self.vault());
        self.shared.rt.block_on(async {
            let mut pos = offset;
            let mut written = 0u64;
            let mut attempt = 0u32;
            loop {
                let mut req = self
                    .client
                    .get_job_output()
                    .account_id(&self.config.account_id)
                    .vault_name(&self.config.bucket)
                    .job_id(&job);
                if pos > 0 {
                    req = req.range(format!("bytes={pos}-"));
                }
                let resp = match within(progress, stall, req.send()).await? {
                    // A server that answers nothing: as a dropped connection.
                    None if attempt < retries => {
                        unless_stopped(
                            progress,
                            tokio::time::sleep(backoff_delay(backoff, attempt)),
                        )
                        .await?;
                        attempt += 1;
                        continue;
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::Network,
                            format!(
                                "reading {name} from byte {pos}: no answer within {stall:?}; gave up after {} attempts",
                                attempt + 1
                            ),
                        ));
                    }
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        let err = sdk_error(format!("reading {name} from byte {pos}"), e);
                        if err.kind() == ErrorKind::Network && attempt < retries {
                            unless_stopped(
                                progress,
                                tokio::time::sleep(backoff_delay(backoff, attempt)),
                            )
                            .await?;
                            attempt += 1;
                            continue;
                        }
                        return Err(err);
                    }
                };
                let mut body = resp.body;
                let mut pace = Pace::new(stall, None);
                let reason = loop {
                    match within(progress, pace.left(), body.next()).await? {
                        None => match pace.window_over(None) {
                            Ok(()) => continue,
                            Err(why) => break why,
                        },
                        Some(Some(Ok(chunk))) => {
                            out.write_all(&chunk).map_err(|e| {
                                crate::error::error_from_io(e).context(format!("writing {name}"))
                            })?;
                            let n = chunk.len() as u64;
                            pos += n;
                            written += n;
                            progress.add(n);
                            pace.add(n);
                            if pace.progressed() {
                                attempt = 0;
                            }
                        }
                        Some(Some(Err(e))) => break e.to_string(),
                        Some(None) => return Ok(written),
                    }
                };
                if attempt >= retries {
                    return Err(Error::new(
                        ErrorKind::Network,
                        format!(
                            "reading {name}: connection dropped at byte {pos} ({reason}); gave up after {} attempts",
                            attempt + 1
                        ),
                    ));
                }
                unless_stopped(
                    progress,
                    tokio::time::sleep(backoff_delay(backoff, attempt)),
                )
                .await?;
                attempt += 1;
            }
        })
    }

    fn request_retrieval(
        &self,
        key: &str,
        _days: u32,
        tier: RetrievalTier,
    ) -> Result<RetrievalStatus> {
        // A vault job's output stays readable for 24 hours; `days` has no say.
        let status = self.retrieval_status(key)?;
        if status != RetrievalStatus::NotRequested {
            return Ok(status);
        }
        let (retries, backoff) = self.retries();
        let what = format!(
            "requesting a retrieval of archive {key} of {}",
            self.vault()
        );
        let params = JobParameters::builder()
            .r#type("archive-retrieval")
            .archive_id(key)
            .tier(tier.as_str())
            .description(format!("snap restore of {key}"))
            .build();
        self.shared.send((retries, backoff), &what, || {
            self.client
                .initiate_job()
                .account_id(&self.config.account_id)
                .vault_name(&self.config.bucket)
                .job_parameters(params.clone())
                .send()
        })?;
        Ok(RetrievalStatus::InProgress)
    }

    fn retrieval_status(&self, key: &str) -> Result<RetrievalStatus> {
        let jobs = self.jobs_for(key)?;
        if jobs.iter().any(|(_, s)| *s == StatusCode::Succeeded) {
            // Job output is kept 24 hours after completion.
            return Ok(RetrievalStatus::Ready { expires: None });
        }
        if jobs.iter().any(|(_, s)| *s == StatusCode::InProgress) {
            return Ok(RetrievalStatus::InProgress);
        }
        Ok(RetrievalStatus::NotRequested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_part_sizes() {
        assert_eq!(vault_part_size(64 * MIB, None), 64 * MIB);
        assert_eq!(vault_part_size(5 * MIB, None), 8 * MIB);
        assert_eq!(vault_part_size(0, None), MIB);
        // 1 TiB needs parts of at least 1 TiB / 10000 = 105 MiB -> 128 MiB.
        assert_eq!(
            vault_part_size(64 * MIB, Some(1024 * 1024 * MIB)),
            128 * MIB
        );
        assert_eq!(
            vault_part_size(64 * MIB, Some(u64::MAX / 2)),
            MAX_VAULT_PART
        );
    }

    #[test]
    fn descriptions() {
        assert!(check_description("backup/2024/x").is_ok());
        assert!(check_description("caf\u{e9}").is_err());
        assert!(check_description(&"x".repeat(1025)).is_err());
    }
}
