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
use std::os::unix::fs::FileExt;
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
    // A link that added no data keeps nothing: the hash of no bytes.
    let mut kept = (pos >= keep).then(|| hex(Sha256::new().finalize().into()));
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

/// An image being put together from its pieces, in any order: each piece's
/// plaintext is streamed through a [`PieceWriter`] (from a file, or straight
/// out of decryption: no second copy), which keeps the bytes the image needs
/// at their place and checks their SHA-256. The image appears at its name
/// only when every range has been written and checked.
pub struct ImageWriter {
    out: PathBuf,
    tmp: tempfile::NamedTempFile,
    ranges: Vec<Range>,
    done: Vec<bool>,
}

impl ImageWriter {
    /// Start the image of `ranges` at `out` (which must not exist), with
    /// `superblock` (checked now).
    pub fn create(out: &Path, ranges: &[Range], superblock: &[u8; HEAD]) -> Result<ImageWriter> {
        let mut at = 0u64;
        for r in ranges {
            if r.offset != at {
                return Err(Error::invalid_input(format!(
                    "image ranges leave a gap at {at} (next range at {})",
                    r.offset
                )));
            }
            at += r.len;
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".snap-image-")
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| io_err("creating a temporary file in", &dir, e))?;
        let mut w = ImageWriter {
            out: out.to_path_buf(),
            tmp,
            ranges: ranges.to_vec(),
            done: vec![false; ranges.len()],
        };
        let Some(i) = w.ranges.iter().position(|r| r.piece == Piece::Superblock) else {
            return Err(Error::invalid_input("image ranges without the super block"));
        };
        let r = &w.ranges[i];
        if r.len != HEAD as u64 || r.piece_offset != 0 {
            return Err(Error::invalid_input(
                "the super block range must be its 96 bytes",
            ));
        }
        if hex(Sha256::digest(superblock).into()) != r.sha256 {
            return Err(Error::new(
                ErrorKind::Integrity,
                "the super block is not the one the chain recorded for this link",
            ));
        }
        w.tmp
            .as_file()
            .write_all_at(superblock, r.offset)
            .map_err(|e| io_err("writing", out, e))?;
        w.done[i] = true;
        Ok(w)
    }

    /// A writer for the whole plaintext of tail `n`; `name` names the piece
    /// in messages.
    pub fn piece(&mut self, n: u32, name: &str) -> Result<PieceWriter<'_>> {
        let Some(i) = self.ranges.iter().position(|r| r.piece == Piece::Tail(n)) else {
            return Err(Error::invalid_input(format!(
                "{name}: link {n}'s tail is not part of this image"
            )));
        };
        if self.done[i] {
            return Err(Error::invalid_input(format!("{name}: given twice")));
        }
        Ok(PieceWriter {
            image: self,
            index: i,
            name: name.to_string(),
            pos: 0,
            sha: Sha256::new(),
        })
    }

    /// Check that every range is there, then give the image its name.
    pub fn finish(self) -> Result<u64> {
        if let Some(i) = self.done.iter().position(|d| !d) {
            let what = match self.ranges[i].piece {
                Piece::Tail(n) => format!("link {n}'s tail"),
                Piece::Superblock => "the super block".into(),
            };
            return Err(Error::new(
                ErrorKind::Integrity,
                format!("{what} is missing: the image cannot be put together"),
            ));
        }
        let size = self.ranges.iter().map(|r| r.len).sum();
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| io_err("syncing", &self.out, e))?;
        self.tmp
            .persist_noclobber(&self.out)
            .map_err(|e| io_err("renaming the assembled image to", &self.out, e.error))?;
        Ok(size)
    }
}

/// The plaintext of one piece, written in order; call [`PieceWriter::finish`].
pub struct PieceWriter<'a> {
    image: &'a mut ImageWriter,
    index: usize,
    name: String,
    /// Bytes of the piece seen so far.
    pos: u64,
    sha: Sha256,
}

impl Write for PieceWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let r = &self.image.ranges[self.index];
        let (from, to) = (r.piece_offset, r.piece_offset + r.len);
        let (start, end) = (self.pos, self.pos + data.len() as u64);
        let a = start.max(from);
        let b = end.min(to);
        if a < b {
            let part = &data[(a - start) as usize..(b - start) as usize];
            self.sha.update(part);
            self.image
                .tmp
                .as_file()
                .write_all_at(part, r.offset + (a - from))?;
        }
        self.pos = end;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PieceWriter<'_> {
    /// Check the piece: long enough, and its range's SHA-256 the recorded one.
    pub fn finish(self) -> Result<()> {
        let r = &self.image.ranges[self.index];
        if self.pos < r.piece_offset + r.len {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "piece {} is too short: {} bytes, the image needs {} from it",
                    self.name,
                    self.pos,
                    r.piece_offset + r.len
                ),
            ));
        }
        let got = hex(self.sha.finalize().into());
        if got != r.sha256 {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "piece {}: bytes {}..{} have SHA-256 {got}, the chain recorded {}: a wrong, \
                     reordered or changed piece",
                    self.name,
                    r.piece_offset,
                    r.piece_offset + r.len,
                    r.sha256
                ),
            ));
        }
        self.image.done[self.index] = true;
        Ok(())
    }
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
    let mut image = ImageWriter::create(out, ranges, superblock)?;
    for r in ranges {
        let Piece::Tail(n) = r.piece else { continue };
        let path = tail(n);
        let name = format!("{} (tail of link {n})", show(&path));
        let mut f = File::open(&path).map_err(|e| io_err("opening piece", &path, e))?;
        let mut w = image.piece(n, &name)?;
        // Only what the image needs is read.
        f.seek(SeekFrom::Start(r.piece_offset))
            .map_err(|e| io_err("reading piece", &path, e))?;
        w.pos = r.piece_offset;
        io::copy(&mut (&mut f).take(r.len), &mut w).map_err(|e| io_err("copying", &path, e))?;
        w.finish()?;
    }
    image.finish()
}
