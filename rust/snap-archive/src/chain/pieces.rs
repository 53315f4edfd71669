//! One piece of a chain: encrypted on its own to the chain's recipients,
//! uploaded under Object Lock, the lock read back.

use std::io::{self, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use snap_core::{Error, ErrorKind, Progress, Result, record};
use snap_crypt::Recipient;
use snap_offsite::{ArchiveTarget, PutOptions, RETAIN_MARGIN};

use super::manifest::ChainPiece;

/// A reader that hashes the byte ranges `[from, to)` of what it passes on.
pub struct RangeHasher<R> {
    inner: R,
    pos: u64,
    ranges: Vec<(u64, u64, Sha256)>,
}

impl<R: Read> RangeHasher<R> {
    pub fn new(inner: R, ranges: &[(u64, u64)]) -> Self {
        RangeHasher {
            inner,
            pos: 0,
            ranges: ranges.iter().map(|&(a, b)| (a, b, Sha256::new())).collect(),
        }
    }

    /// Lowercase hex SHA-256 of each range, in the order given.
    pub fn finish(self) -> Vec<String> {
        self.ranges
            .into_iter()
            .map(|(_, _, h)| hex::encode(h.finalize()))
            .collect()
    }
}

impl<R: Read> Read for RangeHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for (a, b, h) in &mut self.ranges {
            let (x, y) = (start.max(*a), end.min(*b));
            if x < y {
                h.update(&buf[(x - start) as usize..(y - start) as usize]);
            }
        }
        self.pos = end;
        Ok(n)
    }
}

/// Days of retention to ask for so that the lock lasts until `until`
/// (never fewer than `min_days`).
pub fn days_until(now: SystemTime, until: SystemTime, min_days: u32) -> u32 {
    let left = until
        .duration_since(now)
        .unwrap_or_default()
        .saturating_sub(RETAIN_MARGIN);
    let days = left.as_secs().div_ceil(86_400) as u32;
    days.max(min_days)
}

pub fn rfc3339(t: SystemTime) -> String {
    record::format_unix(unix(t))
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// The lock an object carries at `version_id`, as the target reports it now
/// (mode, retain until). An S3 server may silently ignore a lock header: this
/// is what is relied on, never what was asked for. Object Lock targets are
/// asked by version (GetObjectRetention, the read-back `snap_offsite`
/// applies to every upload): a HEAD of the key would answer for its current
/// version, which on a server that ignores `If-None-Match` may be anyone's.
pub fn read_lock(
    target: &dyn ArchiveTarget,
    key: &str,
    version_id: Option<&str>,
) -> Result<(Option<String>, Option<SystemTime>)> {
    if target.has_object_lock() {
        let r = target.retention(key, version_id)?;
        return Ok((r.mode, r.retain_until));
    }
    let info = target.head(key)?;
    Ok((info.lock_mode, info.retain_until))
}

/// Check that `key` at `version_id` is locked in COMPLIANCE mode until at
/// least `until`; returns its retain-until. `what` names the piece in the error.
pub fn require_lock(
    target: &dyn ArchiveTarget,
    key: &str,
    version_id: Option<&str>,
    until: SystemTime,
    what: &str,
) -> Result<SystemTime> {
    let (mode, got) = read_lock(target, key, version_id).map_err(|e| {
        Error::new(
            e.kind(),
            format!("reading back the lock of {what} ({key}): {e}"),
        )
    })?;
    match (mode.as_deref(), got) {
        (Some("COMPLIANCE"), Some(t)) if t >= until => Ok(t),
        (mode, t) => Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{what} ({key}) is locked {} until {}, but it must stay in COMPLIANCE mode until at least {}: \
                 the target did not keep the lock snap asked for; nothing published",
                mode.unwrap_or("in no mode"),
                t.map_or_else(|| "never".to_string(), rfc3339),
                rfc3339(until)
            ),
        )),
    }
}

/// What [`upload`] made.
pub struct Uploaded {
    pub piece: ChainPiece,
    /// SHA-256 of each range asked for, in order.
    pub range_sha256: Vec<String>,
    pub seconds: f64,
}

/// Everything [`upload`] needs besides the plaintext.
pub struct Upload<'a> {
    pub target: &'a dyn ArchiveTarget,
    pub recipients: &'a [Recipient],
    pub put: PutOptions,
    pub progress: &'a Progress,
}

/// Which piece: `link-0003.data` of link 3, kind `data`, to object `key`.
pub struct PieceName<'a> {
    pub name: &'a str,
    pub link: u32,
    pub kind: &'a str,
    pub key: &'a str,
}

/// Encrypt `input` (`size` bytes) straight into a new object `id.key` and
/// check the upload against what was encrypted. `ranges`: plaintext ranges
/// whose SHA-256 is wanted.
///
/// Every digest is computed once: the plaintext's (the whole piece, and each
/// range) where it is read, the ciphertext's by the upload writer, which
/// hashes what it sends; the encryption adds only the MDC's SHA-1.
pub fn upload(
    up: &Upload<'_>,
    id: &PieceName<'_>,
    input: impl Read + Send,
    size: u64,
    ranges: &[(u64, u64)],
) -> Result<Uploaded> {
    let PieceName {
        name,
        link,
        kind,
        key,
    } = *id;
    let began = std::time::Instant::now();
    let put = up
        .put
        .clone()
        .with_size_hint(size + size / 100 + (64 << 10))
        .with_description(format!("snap chain piece {name}"));
    let mut writer = up.target.create_writer(key, &put, up.progress)?;
    // The whole piece is one more range, unless a range is the whole piece.
    let whole = ranges.iter().position(|&r| r == (0, size));
    let mut all = ranges.to_vec();
    if whole.is_none() {
        all.push((0, size));
    }
    let mut hasher = RangeHasher::new(input, &all);
    let enc = snap_crypt::encrypt_with(
        &mut hasher,
        &format!("reading piece {name}"),
        &mut *writer,
        &format!("uploading piece {name} to {}", up.target.describe()),
        up.recipients,
        snap_crypt::Digests::NONE,
        &Progress::silent("encrypt"),
    );
    let enc = match enc {
        Ok(e) => e,
        Err(e) => {
            let _ = writer.abort();
            return Err(e);
        }
    };
    let done = writer.finish()?;
    if done.size != enc.ciphertext_bytes {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "uploaded piece {name} ({key}: {} bytes) differs from what was encrypted ({} bytes)",
                done.size, enc.ciphertext_bytes
            ),
        ));
    }
    if enc.plaintext_bytes != size {
        return Err(Error::internal(format!(
            "piece {name}: {} bytes encrypted, {size} expected",
            enc.plaintext_bytes
        )));
    }
    let digests = hasher.finish();
    // As for a full archive: a server may store a multipart upload without
    // the lock its headers asked for (Ceph RGW 16, moto); set it, or fail.
    snap_offsite::ensure_upload_locked(up.target, &done)
        .map_err(|e| Error::new(e.kind(), format!("piece {name}: {e}")))?;
    Ok(Uploaded {
        piece: ChainPiece {
            name: name.to_string(),
            link,
            kind: kind.to_string(),
            key: done.key.clone(),
            version_id: done.version_id.clone(),
            size: done.size,
            sha256: done.sha256,
            plaintext_size: enc.plaintext_bytes,
            plaintext_sha256: digests[whole.unwrap_or(ranges.len())].clone(),
            storage_class: done
                .storage_class
                .unwrap_or_else(|| up.put.storage_class.clone()),
            lock_mode: None,
            retain_until: None,
            retain_until_unix: None,
            uploaded: record::now(),
        },
        range_sha256: digests[..ranges.len()].to_vec(),
        seconds: began.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_hashed_across_reads() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut r = RangeHasher::new(&data[..], &[(0, 96), (96, 9_000), (9_000, 10_000)]);
        let mut out = Vec::new();
        let mut buf = [0u8; 77];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
        let got = r.finish();
        let want = |a: usize, b: usize| hex::encode(Sha256::digest(&data[a..b]));
        assert_eq!(got, vec![want(0, 96), want(96, 9000), want(9000, 10000)]);
    }

    #[test]
    fn retention_days_cover_the_planned_end() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let until = now + Duration::from_secs(180 * 86_400) + RETAIN_MARGIN;
        assert_eq!(days_until(now, until, 90), 180);
        let later = now + Duration::from_secs(3_600);
        let d = days_until(later, until, 90);
        let got = snap_offsite::retain_until(later, d).unwrap();
        assert!(got >= until);
        assert_eq!(days_until(now, now, 90), 90);
    }
}
