#![forbid(unsafe_code)]
//! Which bytes make the image at a link, with the SHA-256 of each range,
//! and putting an image together from its pieces with every range checked.
//!
//! SquashFS has no checksum over file data: an image assembled from pieces
//! in the wrong order can still be read, with wrong contents. So every range
//! carries the SHA-256 of its bytes, and [`assemble`] refuses a piece that
//! does not match before the image exists.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use snap_core::{Error, ErrorKind, Result};

use super::index::LinkRecord;
use crate::ffi::HEAD;
use crate::util::{io_err, show};

/// Where the bytes of an image come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Piece {
    /// The super block of the link the image is for (96 bytes).
    Superblock,
    /// The tail written by link `n` (for the base: the whole base image).
    Tail(u32),
}

/// `len` bytes of the image at `offset` are `piece`'s bytes at
/// `piece_offset`; their SHA-256 is `sha256` (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
    pub piece: Piece,
    pub piece_offset: u64,
    pub sha256: String,
}

/// The byte ranges that make the image at the last of `links`, whose tail
/// (from the super block on, for a base) hashes to `tail_sha256`.
pub fn ranges(links: &[LinkRecord], tail_sha256: &str, superblock: &[u8; HEAD]) -> Vec<Range> {
    let mut out = Vec::with_capacity(links.len() + 1);
    let Some(last) = links.last() else {
        return out;
    };
    out.push(Range {
        offset: 0,
        len: HEAD as u64,
        piece: Piece::Superblock,
        piece_offset: 0,
        sha256: hex(Sha256::digest(superblock).into()),
    });
    for (i, l) in links.iter().enumerate() {
        let newest = i + 1 == links.len();
        let end = if newest { last.size } else { l.data_end };
        let from = l.start.max(HEAD as u64);
        out.push(Range {
            offset: from,
            len: end - from,
            piece: Piece::Tail(l.number),
            piece_offset: from - l.start,
            sha256: if newest {
                tail_sha256.to_string()
            } else {
                l.data_sha256.clone()
            },
        });
    }
    out
}

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hash a finished tail: `(bytes later links keep, all of it)`, both from
/// the super block on for a base.
pub(crate) fn hash_tail(f: &File, link: &LinkRecord) -> io::Result<(String, String)> {
    let from = if link.start == 0 { HEAD as u64 } else { 0 };
    let keep = link.data_end - link.start;
    let total = link.size - link.start;
    let mut r = io::BufReader::with_capacity(1 << 20, f);
    r.seek(SeekFrom::Start(from))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    let mut kept = None;
    while pos < total {
        let stop = if pos < keep { keep } else { total };
        let n = ((stop - pos) as usize).min(buf.len());
        r.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        pos += n as u64;
        if pos == keep {
            kept = Some(hex(h.clone().finalize().into()));
        }
    }
    let kept = kept.unwrap_or_else(|| hex(h.clone().finalize().into()));
    Ok((kept, hex(h.finalize().into())))
}

/// Put the image of `ranges` together at `out` (a new file) from the tails
/// `tail(n)` and `superblock`, checking every range's SHA-256 first: a
/// missing, short, reordered or changed piece is refused, naming it, and
/// nothing is left at `out`.
pub fn assemble(
    ranges: &[Range],
    superblock: &[u8; HEAD],
    tail: &dyn Fn(u32) -> PathBuf,
    out: &Path,
) -> Result<u64> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".snap-image-")
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| io_err("creating a temporary file in", &dir, e))?;
    let mut w = io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    for r in ranges {
        if r.offset != at {
            return Err(Error::invalid_input(format!(
                "image ranges leave a gap at {at} (next range at {})",
                r.offset
            )));
        }
        let mut h = Sha256::new();
        match r.piece {
            Piece::Superblock => {
                if r.len != HEAD as u64 || r.piece_offset != 0 {
                    return Err(Error::invalid_input(
                        "the super block range must be its 96 bytes",
                    ));
                }
                h.update(superblock);
                w.write_all(superblock)
                    .map_err(|e| io_err("writing", out, e))?;
            }
            Piece::Tail(n) => {
                let path = tail(n);
                let mut f = File::open(&path).map_err(|e| io_err("opening piece", &path, e))?;
                f.seek(SeekFrom::Start(r.piece_offset))
                    .map_err(|e| io_err("reading piece", &path, e))?;
                let mut left = r.len;
                while left > 0 {
                    let want = (left as usize).min(buf.len());
                    let got = f
                        .read(&mut buf[..want])
                        .map_err(|e| io_err("reading piece", &path, e))?;
                    if got == 0 {
                        return Err(Error::new(
                            ErrorKind::Integrity,
                            format!(
                                "piece {} (tail of link {n}) is too short: it ends {left} bytes \
                                 before the {} bytes the image needs from it",
                                show(&path),
                                r.len
                            ),
                        ));
                    }
                    h.update(&buf[..got]);
                    w.write_all(&buf[..got])
                        .map_err(|e| io_err("writing", out, e))?;
                    left -= got as u64;
                }
            }
        }
        let got = hex(h.finalize().into());
        if got != r.sha256 {
            let what = match r.piece {
                Piece::Superblock => "the super block".to_string(),
                Piece::Tail(n) => format!("{} (tail of link {n})", show(&tail(n))),
            };
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "{what}: bytes {}..{} have SHA-256 {got}, the chain recorded {}: a wrong, \
                     reordered or changed piece",
                    r.piece_offset,
                    r.piece_offset + r.len,
                    r.sha256
                ),
            ));
        }
        at += r.len;
    }
    w.flush().map_err(|e| io_err("writing", out, e))?;
    drop(w);
    tmp.as_file()
        .sync_all()
        .map_err(|e| io_err("syncing", out, e))?;
    tmp.persist_noclobber(out)
        .map_err(|e| io_err("renaming the assembled image to", out, e.error))?;
    Ok(at)
}
