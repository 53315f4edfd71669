//! Reads: HEAD, listings, incomplete uploads, GET with resume, retrieval
//! from archival storage classes.

use std::io::Write;
use std::time::SystemTime;

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::{
    ChecksumMode, EncodingType, GlacierJobParameters, ObjectLockLegalHoldStatus, RestoreRequest,
    Tier,
};
use snap_core::{Error, ErrorKind, Progress, Result};

use super::S3Target;
use crate::error::{sdk_error, service_code};
use crate::listing::{Listed, check_marker, every_page};
use crate::parts::{Pace, backoff_delay, from_sdk_time, unless_stopped, with_retries, within};
use crate::{
    IncompleteUpload, ListEntry, ObjectInfo, RetrievalStatus, RetrievalTier, VersionEntry,
};

/// A key from a listing asked with `EncodingType=url`: S3 encodes a space
/// as `+` and everything else as `%XX`. Asked so, a key that XML 1.0 cannot
/// carry (U+FFFE, control characters: anyone who can put an object can name
/// one so) reaches snap instead of failing the whole listing.
fn url_key(text: Option<&str>) -> String {
    let text = text.unwrap_or_default().replace('+', " ");
    percent_encoding::percent_decode_str(&text)
        .decode_utf8_lossy()
        .into_owned()
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

impl S3Target {
    pub(super) fn head_object(&self, key: &str) -> Result<ObjectInfo> {
        let what = format!("looking up {}", self.url(key));
        let (retries, backoff) = self.retries();
        let out = self.shared.send((retries, backoff), &what, || {
            self.client
                .head_object()
                .bucket(&self.config.bucket)
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
        })?;
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

    pub(super) fn list_objects(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        let what = format!("listing s3://{}/{prefix}", self.config.bucket);
        let start = || {
            self.client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(prefix)
                .encoding_type(EncodingType::Url)
                .into_paginator()
                .send()
        };
        let next = |page: &ListObjectsV2Output| {
            let more = page.is_truncated() == Some(true);
            let marker = page.next_continuation_token().map(str::to_owned);
            (page.contents().len(), more, marker)
        };
        let mut entries = every_page(
            &self.shared,
            &self.config,
            &what,
            start,
            next,
            |page, out| {
                out.extend(page.contents().iter().map(|o| ListEntry {
                    key: url_key(o.key()),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    storage_class: o.storage_class().map(|c| c.as_str().to_owned()),
                    last_modified: o.last_modified().and_then(from_sdk_time),
                }));
            },
        )?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Every version and delete marker under `prefix`. The SDK has no
    /// paginator for ListObjectVersions (two markers), hence the loop.
    /// With `only_key`, just the versions of the key `prefix` itself: the
    /// listing stops at the first other key (keys come in order, and `prefix`
    /// is the first of those it begins), however many others there are.
    pub(super) fn list_object_versions(
        &self,
        prefix: &str,
        only_key: bool,
    ) -> Result<Vec<VersionEntry>> {
        let mut entries: Vec<(usize, VersionEntry)> = Vec::new();
        let mut listed = Listed::new(&self.config);
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        let what = format!(
            "listing the object versions under s3://{}/{prefix}",
            self.config.bucket
        );
        loop {
            let out = self
                .shared
                .send_within(&self.config, &what, || {
                    self.client
                        .list_object_versions()
                        .bucket(&self.config.bucket)
                        .prefix(prefix)
                        .encoding_type(EncodingType::Url)
                        .set_key_marker(key_marker.clone())
                        .set_version_id_marker(version_marker.clone())
                        .send()
                })
                .map_err(|e| {
                    if e.kind() == ErrorKind::Refused {
                        e.context("a reader needs s3:ListBucketVersions")
                    } else {
                        e
                    }
                })?;
            listed.page(out.versions().len() + out.delete_markers().len(), &what)?;
            let page_start = entries.len();
            for v in out.versions() {
                let n = entries.len();
                entries.push((
                    n,
                    VersionEntry {
                        key: url_key(v.key()),
                        version_id: v.version_id().map(str::to_owned),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        storage_class: v.storage_class().map(|c| c.as_str().to_owned()),
                        last_modified: v.last_modified().and_then(from_sdk_time),
                        is_latest: v.is_latest().unwrap_or(false),
                        delete_marker: false,
                    },
                ));
            }
            for m in out.delete_markers() {
                let n = entries.len();
                entries.push((
                    n,
                    VersionEntry {
                        key: url_key(m.key()),
                        version_id: m.version_id().map(str::to_owned),
                        size: 0,
                        storage_class: None,
                        last_modified: m.last_modified().and_then(from_sdk_time),
                        is_latest: m.is_latest().unwrap_or(false),
                        delete_marker: true,
                    },
                ));
            }
            // Where the next page starts: the greatest key this page holds
            // (decoded from its <Key>), never the service's NextKeyMarker
            // alone: Ceph RGW 16 sends that one raw even when asked for
            // EncodingType=url, and decoding a raw marker would resume past
            // keys (a hostile `%7A` key made a listing skip an archive).
            let page_last = entries[page_start..]
                .iter()
                .map(|(_, e)| e.key.clone())
                .max();
            if only_key {
                let others = entries.iter().any(|(_, e)| e.key != prefix);
                entries.retain(|(_, e)| e.key == prefix);
                if others {
                    break;
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            let broken = |why: String| {
                Error::new(
                    ErrorKind::Integrity,
                    format!("{what}: the listing cannot be followed: {why}"),
                )
            };
            let Some(last) = page_last else {
                return Err(broken("a page marked truncated holds no entry".into()));
            };
            if let Some(raw) = out.next_key_marker()
                && raw != last
                && url_key(Some(raw)) != last
            {
                return Err(broken(format!(
                    "the service says to go on after {raw:?}, its last key is {last:?}"
                )));
            }
            let version = out.next_version_id_marker().map(str::to_owned);
            check_marker(&last, &what)?;
            check_marker(version.as_deref().unwrap_or_default(), &what)?;
            if (Some(&last), version.as_ref()) == (key_marker.as_ref(), version_marker.as_ref()) {
                return Err(broken(format!("no progress past {last:?}")));
            }
            key_marker = Some(last);
            version_marker = version;
        }
        // The service lists a key's versions newest first; oldest first here
        // (by time, then the reverse of the service's order).
        entries.sort_by(|(i, a), (j, b)| {
            a.key
                .cmp(&b.key)
                .then(a.last_modified.cmp(&b.last_modified))
                .then(j.cmp(i))
        });
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }

    /// The incomplete uploads under `prefix`. No SDK paginator (two
    /// markers): each page goes on after the last upload of the one before,
    /// its key decoded (as `list_object_versions` does: Ceph RGW sends the
    /// raw `NextKeyMarker`). Only keys under `prefix` are kept: the service
    /// filters by it, but what is aborted must not rest on its word.
    pub(super) fn list_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        let mut uploads = Vec::new();
        let mut listed = Listed::new(&self.config);
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        let what = format!(
            "listing incomplete uploads under s3://{}/{prefix}",
            self.config.bucket
        );
        loop {
            let out = self.shared.send_within(&self.config, &what, || {
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.config.bucket)
                    .prefix(prefix)
                    .encoding_type(EncodingType::Url)
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone())
                    .send()
            })?;
            listed.page(out.uploads().len(), &what)?;
            let mut last = None;
            for u in out.uploads() {
                let key = url_key(u.key());
                let upload_id = u.upload_id().unwrap_or_default().to_owned();
                last = Some((key.clone(), upload_id.clone()));
                if key.starts_with(prefix) {
                    uploads.push(IncompleteUpload {
                        key,
                        upload_id,
                        initiated: u.initiated().and_then(from_sdk_time),
                    });
                }
            }
            let more = out.is_truncated() == Some(true);
            let marker = last.as_ref().map(|(k, id)| format!("{k}\n{id}"));
            listed.next(more, marker.as_deref(), &what)?;
            match last {
                Some((key, id)) if more => {
                    key_marker = Some(key);
                    id_marker = Some(id);
                }
                _ => return Ok(uploads),
            }
        }
    }

    pub(super) fn abort_upload(&self, upload: &IncompleteUpload) -> Result<()> {
        let what = format!(
            "aborting the incomplete upload {} of {}",
            upload.upload_id,
            self.url(&upload.key)
        );
        let (retries, backoff) = self.retries();
        let res = self.shared.send((retries, backoff), &what, || {
            self.client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(&upload.key)
                .upload_id(&upload.upload_id)
                .send()
        });
        match res {
            Ok(_) => Ok(()),
            // Already gone (aborted by a retry or by someone else): fine.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn get_inner(
        &self,
        key: &str,
        version_id: Option<&str>,
        offset: u64,
        out: &mut dyn Write,
        progress: &Progress,
    ) -> Result<u64> {
        let (retries, backoff) = self.retries();
        let stall = self.config.stall_timeout;
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
                let resp = match within(progress, stall, req.send()).await? {
                    // A server that answers nothing: as a dropped connection.
                    None if attempt < retries => {
                        unless_stopped(progress, tokio::time::sleep(backoff_delay(backoff, attempt))).await?;
                        attempt += 1;
                        continue;
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::Network,
                            format!("{what}: no answer within {stall:?}; gave up after {} attempts", attempt + 1),
                        ));
                    }
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        if pos > 0 && service_code(&e) == Some("InvalidRange") {
                            // Nothing left after `pos`: the file was complete.
                            return Ok(written);
                        }
                        let err = sdk_error(&what, e);
                        if err.kind() == ErrorKind::Network && attempt < retries {
                            unless_stopped(progress, tokio::time::sleep(backoff_delay(backoff, attempt))).await?;
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
                let mut pace = Pace::new(stall, Some(expected_end.saturating_sub(pos)));
                let dropped = loop {
                    match within(progress, pace.left(), body.next()).await? {
                        None => match pace.window_over(Some(expected_end.saturating_sub(pos))) {
                            Ok(()) => continue,
                            Err(why) => break Some(why),
                        },
                        Some(Some(Ok(chunk))) => {
                            out.write_all(&chunk)
                                .map_err(|e| crate::error::error_from_io(e).context(format!("writing {url}")))?;
                            let n = chunk.len() as u64;
                            pos += n;
                            written += n;
                            progress.add(n);
                            pace.add(n);
                            // Only real progress earns the retries back.
                            if pace.progressed() {
                                attempt = 0;
                            }
                        }
                        Some(Some(Err(e))) => break Some(e.to_string()),
                        Some(None) if pos < expected_end => {
                            break Some(format!("body ended at byte {pos} of {expected_end}"));
                        }
                        Some(None) => return Ok(written),
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
                    unless_stopped(progress, tokio::time::sleep(backoff_delay(backoff, attempt))).await?;
                    attempt += 1;
                }
            }
        })
    }

    pub(super) fn request_retrieval_inner(
        &self,
        key: &str,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<RetrievalStatus> {
        let info = self.head_object(key)?;
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
        Ok(self.head_object(key)?.retrieval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
