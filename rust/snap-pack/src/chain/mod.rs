#![forbid(unsafe_code)]
//! Chains: an image of the whole history that grows by appending.
//!
//! A chain starts with a **base**: a full image of every snapshot, each
//! named by its time (`2026-11-30T040012Z/db1/etc/...`, see
//! [`snapshots`]). Each later **link** writes only a **tail**: data blocks
//! and fragments of files the image does not hold yet, then the complete
//! metadata tables of every snapshot still in history (snapshots gone from
//! history are simply not listed; their data becomes dead bytes), then a new
//! super block, kept apart. The image at link N is the image at link N−1 cut
//! at its data end, followed by tail N, with its first 96 bytes replaced by
//! super block N: a plain SquashFS image that unsquashfs, the kernel and
//! snap's own unpack read. [`ranges`] lists which bytes come from where.
//!
//! Files the previous link's image already holds are referenced, never read
//! or compressed again: the chain **index** (one root-only file, see
//! `index.rs`) records per packed file inode its identity (device, inode,
//! generation and/or birth time, size, modification time, server) and where
//! its data lies. A file is reused only on an exact match, below the same
//! server, so another server's data can never appear under its name. On a
//! file system with neither inode generations nor birth times, files are
//! always read (counted as `unkeyed_files`).
//!
//! A link never changes anything until its caller [`Link::commit`]s it: the
//! tail is a new file, the new index waits beside the old one and replaces
//! it atomically on commit. If the index is lost, [`rebuild_index`] makes it
//! again from the chain's image and the history.

mod assemble;
mod index;
mod index_write;
mod rebuild;
mod reuse;
mod snapshots;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use snap_core::{Error, ErrorKind, Progress, Result};

use crate::ffi::{HEAD, SqFile};
use crate::pack::{PackOptions, PackSummary, Sink, Source, check_options, pack_into};
use crate::util::{io_err, show};

pub use assemble::{ImageWriter, Piece, PieceWriter, Range, assemble, ranges};
pub use index::LinkRecord;
pub use rebuild::{ImageSource, RebuildSummary, rebuild_index};
pub use snapshots::{STAMP, Snapshot, TimeSource, snapshots, time_name};

use index::{Header, IndexReader, IndexWriter};
use reuse::ChainReuse;

/// What a link did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkSummary {
    /// 0 for the base.
    pub number: u32,
    pub snapshots: usize,
    /// Files (inodes) read and packed now, and the bytes read for them.
    pub new_files: u64,
    pub bytes_read: u64,
    /// Files referenced in the image without being read.
    pub reused_files: u64,
    pub reused_bytes: u64,
    /// Files always read (no trustworthy identity on their file system).
    pub unkeyed_files: u64,
    pub tail_bytes: u64,
    pub image_bytes: u64,
    /// Bytes of file data in the image, those its files still use, and the
    /// rest (data of snapshots and files history no longer has).
    pub data_bytes: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    pub dead_ratio: f64,
    #[serde(skip)]
    pub pack: PackSummary,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A link written but not committed.
#[derive(Debug)]
pub struct Link {
    pub number: u32,
    /// The tail file (for the base: the whole image, super block included).
    pub tail: PathBuf,
    /// Image offset of the tail's first byte.
    pub tail_start: u64,
    /// The image's new first 96 bytes.
    pub superblock: [u8; HEAD],
    /// Every link of the chain so far, this one last.
    pub links: Vec<LinkRecord>,
    /// How to assemble the image at this link.
    pub ranges: Vec<Range>,
    pub snapshots: Vec<Snapshot>,
    pub summary: LinkSummary,
    index: PathBuf,
    pending: Option<tempfile::NamedTempFile>,
}

impl Link {
    /// Make this link the chain's latest: its index replaces the previous
    /// one atomically. Until then the chain is unchanged. Once only.
    pub fn commit(&mut self) -> Result<()> {
        let index = &self.index;
        let Some(pending) = self.pending.take() else {
            return Err(Error::invalid_input(format!(
                "link {} is already committed",
                self.number
            )));
        };
        pending
            .persist(index)
            .map_err(|e| io_err("replacing the chain index", index, e.error))?;
        let dir = parent(index);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("syncing directory", &dir, e))
    }
}

/// New indexes of links that were never committed (a killed run): they
/// would only take space. Links of one chain run one at a time (the caller
/// holds the chain's lock).
fn remove_stale_pending(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let n = name.as_encoded_bytes();
        if n.starts_with(b".chain-index-") && n.ends_with(b".pending") {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// zstd level for the metadata tables of chain images (unless the options
/// set one): every link carries the whole history's tables, and at level 6
/// they cost a third of the CPU of level 15 for 2 % more bytes.
pub const CHAIN_METADATA_LEVEL: u32 = 6;

fn chain_options(opts: &PackOptions) -> PackOptions {
    let mut o = opts.clone();
    if o.metadata_level.is_none() && o.compressor == crate::Compressor::Zstd {
        let level = o.level.unwrap_or(o.compressor.default_level());
        o.metadata_level = Some(level.min(CHAIN_METADATA_LEVEL));
    }
    o
}

/// Start a chain (`start`: write its base; `index` must not exist) or add a
/// link to the chain whose index is `index`, writing the tail to the new
/// file `tail`. Nothing of the chain changes until [`Link::commit`].
///
/// The chain keeps the compressor and block size it started with; a link
/// with other `opts` is refused (start a new chain instead).
pub fn link(
    history: &Path,
    index: &Path,
    start: bool,
    tail: &Path,
    opts: &PackOptions,
    progress: &Progress,
) -> Result<Link> {
    let began = Instant::now();
    check_options(opts)?;
    let opts = &chain_options(opts);
    let snaps = snapshots(history)?;
    let old = match (start, fs::symlink_metadata(index)) {
        (true, Ok(_)) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "chain index {} exists: a new chain needs a new index",
                    show(index)
                ),
            ));
        }
        (true, Err(e)) if e.kind() == io::ErrorKind::NotFound => None,
        (false, Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "chain index {} is missing: rebuild it from the chain's image, or start a new chain",
                    show(index)
                ),
            ));
        }
        (_, Err(e)) => return Err(io_err("checking", index, e)),
        (false, Ok(_)) => Some(IndexReader::open(index)?),
    };
    if let Some(o) = &old {
        let h = &o.header;
        if h.block_size != opts.block_size || h.compression_id != opts.compressor.id() {
            return Err(Error::invalid_input(format!(
                "the chain was started with {} and {}-byte blocks; start a new chain to use {} and {}",
                h.compressor,
                h.block_size,
                opts.compressor.name(),
                opts.block_size
            )));
        }
    }
    if fs::symlink_metadata(tail).is_ok() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{} already exists", show(tail)),
        ));
    }
    let tail_dir = parent(tail);
    remove_stale_pending(&parent(index));
    let number = old.as_ref().map_or(0, |o| o.header.links.len() as u32);
    let base = old
        .as_ref()
        .and_then(|o| o.header.links.last())
        .map_or(0, |l| l.data_end);
    let tmp = tempfile::Builder::new()
        .prefix(".snap-link-")
        .suffix(".partial")
        .tempfile_in(&tail_dir)
        .map_err(|e| io_err("creating a temporary file in", &tail_dir, e))?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| io_err("opening", tmp.path(), e))?;
    let image = Rc::new(SqFile::with_base(file, 0, base, [0; HEAD]));
    let map = snapshots::name_map(&snaps);
    let source = Source {
        root: history,
        snapshots: Some(&map),
        root_mtime: snaps.last().map(|s| s.time.0),
    };
    let fragments = old
        .as_ref()
        .map(|o| o.fragments.clone())
        .unwrap_or_default();
    let sink = Sink {
        image: image.clone(),
        path: tail,
        tmp_dir: &tail_dir,
        fragments: &fragments,
        options_written: old.as_ref().map(|o| o.header.compressor_options),
    };
    let prev_links = old
        .as_ref()
        .map(|o| o.header.links.clone())
        .unwrap_or_default();
    let data_start_old = old.as_ref().map(|o| o.header.data_start);
    let compressor_options_old = old.as_ref().map(|o| o.header.compressor_options);
    let writer = IndexWriter::new(&parent(index))?;
    let mut reuse = ChainReuse::new(old, writer, opts.block_size, index);
    let packed = pack_into(&source, sink, opts, progress, Some(&mut reuse))?;
    drop(reuse.old.take());

    let superblock = if base == 0 {
        let mut sb = [0u8; HEAD];
        tmp.as_file()
            .read_exact_at(&mut sb, 0)
            .map_err(|e| io_err("reading back", tmp.path(), e))?;
        sb
    } else {
        image.head()
    };
    let size = image.size();
    let mut links = prev_links;
    let mut this = LinkRecord {
        number,
        start: base,
        data_end: packed.data_end,
        size,
        data_sha256: String::new(),
    };
    let (kept, whole) = assemble::hash_tail(tmp.as_file(), &this)
        .map_err(|e| io_err("reading back", tmp.path(), e))?;
    this.data_sha256 = kept;
    links.push(this);
    let data_start = data_start_old.unwrap_or(packed.data_start);
    let header = Header {
        block_size: opts.block_size,
        compressor: opts.compressor.name().to_string(),
        compression_id: opts.compressor.id(),
        level: opts.level,
        compressor_options: compressor_options_old
            .unwrap_or(packed.sup.flags & crate::sys::SQFS_FLAG_COMPRESSOR_OPTIONS as u16 != 0),
        data_start,
        links: links.clone(),
        minions: 0,
        fragments: 0,
        records: 0,
        blob_bytes: 0,
    };
    let pending = reuse.new.finish(header, &packed.fragments, index)?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| io_err("syncing", tmp.path(), e))?;
    tmp.persist_noclobber(tail)
        .map_err(|e| io_err("renaming the finished tail to", tail, e.error))?;
    File::open(&tail_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing directory", &tail_dir, e))?;
    progress.finish();

    let p = packed.sum;
    let data_bytes = packed.data_end - data_start;
    let live = packed.live_bytes.unwrap_or(data_bytes).min(data_bytes);
    let summary = LinkSummary {
        number,
        snapshots: snaps.len(),
        new_files: p.files - p.reused_files,
        bytes_read: p.bytes_in,
        reused_files: p.reused_files,
        reused_bytes: p.reused_bytes,
        unkeyed_files: p.unkeyed_files,
        tail_bytes: size - base,
        image_bytes: size,
        data_bytes,
        live_bytes: live,
        dead_bytes: data_bytes - live,
        dead_ratio: if data_bytes == 0 {
            0.0
        } else {
            (data_bytes - live) as f64 / data_bytes as f64
        },
        pack: p,
        duration: began.elapsed(),
    };
    Ok(Link {
        number,
        tail: tail.to_path_buf(),
        tail_start: base,
        superblock,
        ranges: ranges(&links, &whole, &superblock),
        links,
        snapshots: snaps,
        summary,
        index: index.to_path_buf(),
        pending: Some(pending),
    })
}
