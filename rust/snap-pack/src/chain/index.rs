#![forbid(unsafe_code)]
//! The chain index: one root-only file holding everything a link needs to
//! continue a chain without its image: the image's parameters, its links
//! (where each tail starts and its data ends), its fragment table, and per
//! packed file inode its identity and where its data lies.
//!
//! Layout (little-endian, sections in this order):
//!
//! ```text
//! "SNAPCHAIN-INDEX\0"  u32 version  u32 n  n bytes of JSON header
//! minions:   u32 count, then per server: u16 length, name bytes
//! fragments: per fragment block: u64 image offset, u32 size word, u32 0
//! records:   88 bytes per file inode, sorted by (device, inode)
//! blob:      the records' block size words
//! SHA-256 of everything before it
//! ```
//!
//! Reading keeps the header, the server names, the fragment table and every
//! 64th record key in memory; records are looked up by binary search with
//! `pread` (a few pages cached), so memory does not grow with the number
//! of files. Writing spills sorted runs of records to temporary files and
//! merges them at the end.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use super::index_write::IndexWriter;
use snap_core::{Error, ErrorKind, Result};

use crate::layout::FileLayout;
use crate::util::{io_err, show};

pub(super) const MAGIC: &[u8; 16] = b"SNAPCHAIN-INDEX\0";
pub(super) const VERSION: u32 = 1;
pub(super) const RECORD: usize = 88;
/// Records per page of the in-memory directory.
const PAGE: usize = 64;
/// Records sorted in memory before a run is spilled.
pub(super) const RUN: usize = 32 * 1024;

/// One link of a chain: its tail starts at `start` (0 for the base, whose
/// tail is a whole image), its data ends at `data_end` (where its metadata
/// tables begin: the next link's tail starts there), and the image at this
/// link is `size` bytes long. `data_sha256`: SHA-256 (hex) of the bytes of
/// this tail that later images keep (from `start`, or the super block's end
/// for the base, to `data_end`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub number: u32,
    pub start: u64,
    pub data_end: u64,
    pub size: u64,
    pub data_sha256: String,
}

/// The index's header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Header {
    pub block_size: u32,
    pub compressor: String,
    pub compression_id: u32,
    pub level: Option<u32>,
    /// Whether the base wrote a compressor options block.
    pub compressor_options: bool,
    pub data_start: u64,
    pub links: Vec<LinkRecord>,
    pub minions: u32,
    pub fragments: u64,
    pub records: u64,
    pub blob_bytes: u64,
}

/// A record: a file's identity and where its data lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub dev: u64,
    pub ino: u64,
    pub generation: Option<u32>,
    pub btime: Option<(i64, u32)>,
    pub owner: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    pub frag: Option<(u32, u32)>,
    pub words: u32,
    pub blocks_start: u64,
    pub blob_off: u64,
}

impl Record {
    pub(super) fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        let flags = self.generation.is_some() as u32 | (self.btime.is_some() as u32) << 1;
        let (bs, bn) = self.btime.unwrap_or((0, 0));
        let (fi, fo) = self.frag.unwrap_or((u32::MAX, 0));
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16..20].copy_from_slice(&self.generation.unwrap_or(0).to_le_bytes());
        b[20..24].copy_from_slice(&flags.to_le_bytes());
        b[24..32].copy_from_slice(&bs.to_le_bytes());
        b[32..36].copy_from_slice(&bn.to_le_bytes());
        b[36..40].copy_from_slice(&self.owner.to_le_bytes());
        b[40..48].copy_from_slice(&self.size.to_le_bytes());
        b[48..56].copy_from_slice(&self.mtime.0.to_le_bytes());
        b[56..60].copy_from_slice(&self.mtime.1.to_le_bytes());
        b[60..64].copy_from_slice(&fi.to_le_bytes());
        b[64..68].copy_from_slice(&fo.to_le_bytes());
        b[68..72].copy_from_slice(&self.words.to_le_bytes());
        b[72..80].copy_from_slice(&self.blocks_start.to_le_bytes());
        b[80..88].copy_from_slice(&self.blob_off.to_le_bytes());
        b
    }

    pub(super) fn decode(b: &[u8]) -> Record {
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let flags = u32at(20);
        let fi = u32at(60);
        Record {
            dev: u64at(0),
            ino: u64at(8),
            generation: (flags & 1 != 0).then(|| u32at(16)),
            btime: (flags & 2 != 0).then(|| (u64at(24) as i64, u32at(32))),
            owner: u32at(36),
            size: u64at(40),
            mtime: (u64at(48) as i64, u32at(56)),
            frag: (fi != u32::MAX).then(|| (fi, u32at(64))),
            words: u32at(68),
            blocks_start: u64at(72),
            blob_off: u64at(80),
        }
    }

    pub(super) fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!(
            "chain index {} is damaged ({what}); rebuild it from the chain's image",
            show(path)
        ),
    )
}

pub(super) fn pad8(n: u64) -> u64 {
    (8 - n % 8) % 8
}

/// An index opened for lookups.
pub(crate) struct IndexReader {
    path: PathBuf,
    file: File,
    pub header: Header,
    pub minions: Vec<Vec<u8>>,
    pub fragments: Vec<(u64, u32)>,
    records_off: u64,
    blob_off: u64,
    /// First key of every page of records.
    dir: Vec<(u64, u64)>,
    cache: Vec<(usize, Vec<u8>)>,
}

impl IndexReader {
    pub fn open(path: &Path) -> Result<IndexReader> {
        let file = File::open(path).map_err(|e| io_err("opening chain index", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_err("reading", path, e))?
            .len();
        if len < 24 + 32 {
            return Err(corrupt(path, "too short"));
        }
        // The checksum covers the whole file: check it before trusting any of it.
        let mut r = BufReader::with_capacity(1 << 16, &file);
        let mut h = Sha256::new();
        let mut left = len - 32;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..n])
                .map_err(|e| io_err("reading", path, e))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        let mut sum = [0u8; 32];
        r.read_exact(&mut sum)
            .map_err(|e| io_err("reading", path, e))?;
        if h.finalize()[..] != sum[..] {
            return Err(corrupt(path, "checksum mismatch"));
        }
        drop(r);
        let mut r = BufReader::new(&file);
        r.seek(SeekFrom::Start(0))
            .map_err(|e| io_err("reading", path, e))?;
        let mut head = [0u8; 24];
        r.read_exact(&mut head)
            .map_err(|e| io_err("reading", path, e))?;
        if &head[..16] != MAGIC {
            return Err(Error::invalid_input(format!(
                "{} is not a chain index",
                show(path)
            )));
        }
        let version = u32::from_le_bytes(head[16..20].try_into().expect("4"));
        if version != VERSION {
            return Err(Error::invalid_input(format!(
                "{}: chain index version {version}; this snap reads version {VERSION}",
                show(path)
            )));
        }
        let hlen = u32::from_le_bytes(head[20..24].try_into().expect("4")) as u64;
        if hlen > len {
            return Err(corrupt(path, "header length"));
        }
        let mut text = vec![0u8; hlen as usize];
        r.read_exact(&mut text)
            .map_err(|e| io_err("reading", path, e))?;
        let header: Header =
            serde_json::from_slice(&text).map_err(|e| corrupt(path, format!("header: {e}")))?;
        let mut pos = 24 + hlen;
        let skip = |r: &mut BufReader<&File>, n: u64| r.seek_relative(n as i64);
        skip(&mut r, pad8(pos)).map_err(|e| io_err("reading", path, e))?;
        pos += pad8(pos);
        let mut minions = Vec::with_capacity(header.minions as usize);
        let mut n4 = [0u8; 4];
        r.read_exact(&mut n4)
            .map_err(|e| io_err("reading", path, e))?;
        pos += 4;
        if u32::from_le_bytes(n4) != header.minions {
            return Err(corrupt(path, "server count"));
        }
        for _ in 0..header.minions {
            let mut l = [0u8; 2];
            r.read_exact(&mut l)
                .map_err(|e| io_err("reading", path, e))?;
            let mut name = vec![0u8; u16::from_le_bytes(l) as usize];
            r.read_exact(&mut name)
                .map_err(|e| io_err("reading", path, e))?;
            pos += 2 + name.len() as u64;
            minions.push(name);
        }
        skip(&mut r, pad8(pos)).map_err(|e| io_err("reading", path, e))?;
        pos += pad8(pos);
        let mut fragments = Vec::with_capacity(header.fragments.min(1 << 24) as usize);
        let mut f16 = [0u8; 16];
        for _ in 0..header.fragments {
            r.read_exact(&mut f16)
                .map_err(|e| io_err("reading", path, e))?;
            fragments.push((
                u64::from_le_bytes(f16[..8].try_into().expect("8")),
                u32::from_le_bytes(f16[8..12].try_into().expect("4")),
            ));
        }
        pos += 16 * header.fragments;
        let records_off = pos;
        let blob_off = records_off + RECORD as u64 * header.records;
        if blob_off + header.blob_bytes + 32 != len {
            return Err(corrupt(path, "section sizes"));
        }
        // Every PAGE-th key.
        let mut dir = Vec::with_capacity(header.records.div_ceil(PAGE as u64) as usize);
        let mut rec = [0u8; RECORD];
        r.seek(SeekFrom::Start(records_off))
            .map_err(|e| io_err("reading", path, e))?;
        let mut last = None;
        for i in 0..header.records {
            r.read_exact(&mut rec)
                .map_err(|e| io_err("reading", path, e))?;
            let k = Record::decode(&rec).key();
            if last.is_some_and(|l| l >= k) {
                return Err(corrupt(path, "records out of order"));
            }
            last = Some(k);
            if i % PAGE as u64 == 0 {
                dir.push(k);
            }
        }
        drop(r);
        Ok(IndexReader {
            path: path.to_path_buf(),
            file,
            header,
            minions,
            fragments,
            records_off,
            blob_off,
            dir,
            cache: Vec::new(),
        })
    }

    fn page(&mut self, p: usize) -> Result<&[u8]> {
        if let Some(i) = self.cache.iter().position(|c| c.0 == p) {
            let hit = self.cache.remove(i);
            self.cache.push(hit);
        } else {
            let first = p * PAGE;
            let n = (self.header.records as usize - first).min(PAGE);
            let mut buf = vec![0u8; n * RECORD];
            self.file
                .read_exact_at(&mut buf, self.records_off + (first * RECORD) as u64)
                .map_err(|e| io_err("reading", &self.path, e))?;
            if self.cache.len() >= 8 {
                self.cache.remove(0);
            }
            self.cache.push((p, buf));
        }
        Ok(&self.cache.last().expect("cached").1)
    }

    /// The record of inode `(dev, ino)`, if there is one.
    pub fn get(&mut self, dev: u64, ino: u64) -> Result<Option<Record>> {
        let k = (dev, ino);
        let p = self.dir.partition_point(|d| *d <= k);
        if p == 0 {
            return Ok(None);
        }
        let page = self.page(p - 1)?;
        let n = page.len() / RECORD;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let r = Record::decode(&page[mid * RECORD..(mid + 1) * RECORD]);
            match r.key().cmp(&k) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(r)),
            }
        }
        Ok(None)
    }

    /// The layout a record describes.
    pub fn layout(&self, r: &Record) -> Result<FileLayout> {
        if r.blob_off + 4 * r.words as u64 > self.header.blob_bytes {
            return Err(corrupt(&self.path, "block list outside the index"));
        }
        let mut bytes = vec![0u8; 4 * r.words as usize];
        self.file
            .read_exact_at(&mut bytes, self.blob_off + r.blob_off)
            .map_err(|e| io_err("reading", &self.path, e))?;
        Ok(FileLayout {
            size: r.size,
            blocks_start: r.blocks_start,
            frag: r.frag,
            words: bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
                .collect(),
        })
    }

    /// All records, in key order.
    #[cfg(test)]
    pub fn records(&mut self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for p in 0..self.dir.len() {
            let page = self.page(p)?.to_vec();
            out.extend(page.chunks_exact(RECORD).map(Record::decode));
        }
        Ok(out)
    }
}
