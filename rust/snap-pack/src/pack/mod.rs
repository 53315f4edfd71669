#![forbid(unsafe_code)]
//! Writing a SquashFS image of a directory tree.
//!
//! Two passes over the tree:
//!
//! 1. **Pre-pass** (metadata only, nothing written): validates every entry
//!    (file type, readability, xattr namespaces, id count) and counts, for
//!    every inode with `st_nlink > 1`, how many of its links lie inside the
//!    packed tree. Bad input fails here, before the image file exists.
//! 2. **Data pass**: a depth-first walk in name-byte order. File data goes
//!    to libsquashfs's block processor (compression on worker threads, block
//!    and fragment deduplication). Inodes and directory listings go, as soon
//!    as they are complete, through metadata writers into two unlinked
//!    temporary files next to the image; after the data they are appended to
//!    the image, followed by the fragment, id and xattr tables and the super
//!    block. Nothing of the tree is held in memory beyond the open
//!    directories on the walk stack, a bounded queue of entries waiting for
//!    their file data to be compressed, and one small record per hardlinked
//!    inode whose links have not all been seen yet.
//!
//! The image is written to a temporary file in the target directory and
//! renamed into place only when complete; on any error it is removed.

mod engine;
mod files;
mod links;
mod packer;
mod prescan;
mod source;
mod xattrs;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use snap_core::{Error, ErrorKind, Progress, Result};

use crate::ffi::SqFile;
use crate::sys;
use crate::util::{io_err, show};

pub(crate) use engine::{Sink, check_options, pack_into};
pub(crate) use files::{FileKey, Reuse};
pub(crate) use source::Source;

/// Compressors this libsquashfs can write. (LZO is not in libsquashfs
/// itself — squashfs-tools-ng keeps it in its tools for licensing reasons —
/// so it can neither be written nor read here.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compressor {
    #[default]
    Zstd,
    Xz,
    Gzip,
    Lz4,
}

impl Compressor {
    pub fn name(self) -> &'static str {
        match self {
            Compressor::Zstd => "zstd",
            Compressor::Xz => "xz",
            Compressor::Gzip => "gzip",
            Compressor::Lz4 => "lz4",
        }
    }

    pub(crate) fn id(self) -> u32 {
        match self {
            Compressor::Zstd => sys::SQFS_COMP_ZSTD,
            Compressor::Xz => sys::SQFS_COMP_XZ,
            Compressor::Gzip => sys::SQFS_COMP_GZIP,
            Compressor::Lz4 => sys::SQFS_COMP_LZ4,
        }
    }

    /// The level used when none is given (libsquashfs's defaults; zstd 15
    /// is also what the field-note benchmark used). LZ4: 0 = fast, >0 = HC.
    pub fn default_level(self) -> u32 {
        match self {
            Compressor::Zstd => 15,
            Compressor::Xz => 6,
            Compressor::Gzip => 9,
            Compressor::Lz4 => 0,
        }
    }
}

impl std::str::FromStr for Compressor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zstd" => Ok(Compressor::Zstd),
            "xz" => Ok(Compressor::Xz),
            "gzip" => Ok(Compressor::Gzip),
            "lz4" => Ok(Compressor::Lz4),
            "lzo" => Err(Error::invalid_input(
                "compressor lzo is not supported by libsquashfs (use zstd, xz, gzip or lz4)",
            )),
            other => Err(Error::invalid_input(format!(
                "unknown compressor {other:?} (use zstd, xz, gzip or lz4)"
            ))),
        }
    }
}

/// What to do with xattrs SquashFS cannot store (anything outside the
/// `user.`, `trusted.` and `security.` namespaces, above all the
/// `system.posix_acl_access` / `system.posix_acl_default` ACLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsupportedXattrs {
    /// Refuse the whole tree in the pre-pass, naming the entries (default:
    /// nothing is silently lost).
    #[default]
    Refuse,
    /// Leave them out of the image; the summary counts them.
    Skip,
}

/// Pack only some entries at one depth (depth 1 = children of the source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub depth: usize,
    pub names: BTreeSet<OsString>,
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    pub compressor: Compressor,
    /// `None`: the compressor's default ([`Compressor::default_level`]).
    pub level: Option<u32>,
    /// Data block size: a power of two from 4 KiB to 1 MiB. Default 128 KiB.
    pub block_size: u32,
    /// Compression threads; `None`: available cores.
    pub threads: Option<usize>,
    pub selection: Option<Selection>,
    pub unsupported_xattrs: UnsupportedXattrs,
    /// Bound on queued work: after this many files wait for compression (or
    /// 8x as many directory entries wait for them) the writer waits for the
    /// compressors and writes the queued inodes. Default 8192; lower values
    /// use less memory and stall the pipeline more often.
    pub max_pending: usize,
    /// Compression level of the metadata tables (inodes, directories);
    /// `None`: the data's. Readers need no level: any level reads back.
    pub metadata_level: Option<u32>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            compressor: Compressor::Zstd,
            level: None,
            block_size: 128 * 1024,
            threads: None,
            selection: None,
            unsupported_xattrs: UnsupportedXattrs::Refuse,
            max_pending: 8192,
            metadata_level: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackSummary {
    /// Directories (including the root).
    pub dirs: u64,
    /// Regular files, counted once per inode.
    pub files: u64,
    /// Inodes in the image (all kinds).
    pub inodes: u64,
    /// Directory entries that share an inode with an earlier entry.
    pub hardlinks: u64,
    pub symlinks: u64,
    /// Fifos, sockets, character and block devices (per inode).
    pub specials: u64,
    /// Inodes carrying xattrs.
    pub xattr_entries: u64,
    /// Xattrs left out under [`UnsupportedXattrs::Skip`].
    pub skipped_xattrs: u64,
    /// Entries whose mtime did not fit SquashFS's unsigned 32-bit seconds
    /// (before 1970 or after 2106) and was clamped.
    pub clamped_mtimes: u64,
    /// Unique file data read (hardlinked data counted once; holes of
    /// sparse files are not read).
    pub bytes_in: u64,
    /// Files with holes, and the bytes of holes skipped (not read, listed
    /// as sparse blocks).
    pub sparse_files: u64,
    pub hole_bytes: u64,
    /// Chain links: files referenced in the image without being read, and
    /// their apparent size.
    pub reused_files: u64,
    pub reused_bytes: u64,
    /// Chain links: files on a file system with neither inode generations
    /// nor birth times, read every time (their identity cannot be trusted).
    pub unkeyed_files: u64,
    pub image_size: u64,
    pub duration: Duration,
}

/// Pack the tree at `src` into a new SquashFS image at `image`.
///
/// Refuses (before writing anything) if `image` exists or the tree has
/// entries that cannot be packed faithfully. On any later error the partial
/// image is removed; the image appears under its name only when complete.
pub fn pack(
    src: &Path,
    image: &Path,
    opts: &PackOptions,
    progress: &Progress,
) -> Result<PackSummary> {
    let start = Instant::now();
    check_options(opts)?;
    match fs::symlink_metadata(image) {
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("image {} already exists", show(image)),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("checking", image, e)),
    }
    let dir = match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("directory {} for the image does not exist", show(&dir)),
        ));
    }
    // An image written inside the tree would be packed into itself.
    if let (Ok(d), Ok(s)) = (fs::canonicalize(&dir), fs::canonicalize(src))
        && d.starts_with(&s)
    {
        return Err(Error::invalid_input(format!(
            "image {} would be inside the tree it packs ({})",
            show(image),
            show(src)
        )));
    }
    // The image is built in a hidden temporary file beside its final name.
    let tmp = tempfile::Builder::new()
        .prefix(".snap-pack-")
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| io_err("creating a temporary image in", &dir, e))?;
    let image_file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| io_err("opening", tmp.path(), e))?;
    let image_sq = Rc::new(SqFile::new(image_file, 0));
    let sink = Sink {
        image: image_sq.clone(),
        path: image,
        tmp_dir: &dir,
        fragments: &[],
        options_written: None,
    };
    let packed = pack_into(&Source::dir(src), sink, opts, progress, None)?;
    let mut sum = packed.sum;

    // Make it durable, then give it its name (refusing to replace anything).
    tmp.as_file()
        .sync_all()
        .map_err(|e| io_err("syncing", tmp.path(), e))?;
    sum.image_size = image_sq.size();
    tmp.persist_noclobber(image)
        .map_err(|e| io_err("renaming the finished image to", image, e.error))?;
    // Make the new name durable too.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing directory", &dir, e))?;
    progress.finish();
    sum.duration = start.elapsed();
    Ok(sum)
}
