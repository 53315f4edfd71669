#![forbid(unsafe_code)]
//! Rebuilding a lost chain index from the chain's own image.
//!
//! Every link carries the complete metadata tables, so the newest tail (with
//! its super block) is enough. Each regular file of the image is matched to
//! history by its path (time name → snapshot directory, then the same
//! relative path), opened without following links, and recorded only if it
//! is still a regular file of the same size and modification time (the
//! image keeps whole seconds). A history inode that would match two
//! different image inodes is left out. Files left out are simply read again
//! by the next link.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::Serialize;
use snap_core::{Error, ErrorKind, Result};

use super::index::{Header, IndexWriter, LinkRecord};
use super::snapshots::snapshots;
use crate::ffi::{Compressor as SqCompressor, HEAD, SqFile};
use crate::pack::{FileKey, PackOptions};
use crate::unpack::{Image, Node};
use crate::util::{io_err, show_bytes};
use crate::walk;

/// Where the chain's image is.
pub enum ImageSource<'a> {
    /// A whole image file (as assembled for some link).
    Image(&'a Path),
    /// The newest link's tail file, which starts at image offset `start`,
    /// with that link's super block.
    Tail {
        tail: &'a Path,
        start: u64,
        superblock: [u8; HEAD],
    },
}

/// What [`rebuild_index`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildSummary {
    /// Regular file inodes in the image.
    pub files: u64,
    /// Recorded: the history file at the same path matches.
    pub recorded: u64,
    /// Not recorded: no such snapshot or file in history any more.
    pub missing: u64,
    /// Not recorded: history's file differs (type, size or time), or its
    /// inode stands for two different image files.
    pub mismatched: u64,
    /// Not recorded: no inode generation nor birth time on its file system.
    pub unkeyed: u64,
}

fn open_image(src: &ImageSource<'_>) -> Result<(Image, u64)> {
    match src {
        ImageSource::Image(p) => {
            let f = File::open(p).map_err(|e| io_err("opening image", p, e))?;
            let len = f.metadata().map_err(|e| io_err("reading", p, e))?.len();
            Ok((Image::open_file(Rc::new(SqFile::new(f, len)), p)?, len))
        }
        ImageSource::Tail {
            tail,
            start,
            superblock,
        } => {
            if *start < HEAD as u64 {
                return Err(Error::invalid_input(
                    "a tail starts after the super block; for the base, give the image",
                ));
            }
            let f = File::open(tail).map_err(|e| io_err("opening", tail, e))?;
            let len = f.metadata().map_err(|e| io_err("reading", tail, e))?.len();
            let file = Rc::new(SqFile::with_base(f, len, *start, *superblock));
            Ok((Image::open_file(file, tail)?, start + len))
        }
    }
}

/// Write a new chain index at `index` (replacing any there, atomically)
/// for the chain whose links are `links` and whose newest image is `image`,
/// matching its files to `history`. `opts` must be the chain's settings.
pub fn rebuild_index(
    history: &Path,
    image: ImageSource<'_>,
    links: &[LinkRecord],
    opts: &PackOptions,
    index: &Path,
) -> Result<RebuildSummary> {
    let (mut img, size) = open_image(&image)?;
    let sup = *img.sup;
    let Some(last) = links.last() else {
        return Err(Error::invalid_input("a chain has at least its base link"));
    };
    if sup.block_size != opts.block_size || sup.compression_id as u32 != opts.compressor.id() {
        return Err(Error::invalid_input(format!(
            "the image uses compressor {} and {}-byte blocks, not {} and {}",
            sup.compression_id,
            sup.block_size,
            opts.compressor.name(),
            opts.block_size
        )));
    }
    if last.size != size || last.data_end != sup.inode_table_start {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "the image ({size} bytes, data end {}) is not the one link {} made \
                 ({} bytes, data end {})",
                sup.inode_table_start, last.number, last.size, last.data_end
            ),
        ));
    }
    let options = sup.flags & crate::sys::SQFS_FLAG_COMPRESSOR_OPTIONS as u16 != 0;
    let data_start = if options {
        options_end(opts)?
    } else {
        HEAD as u64
    };
    let snaps = snapshots(history)?;
    let parent = super::parent(index);
    let mut writer = IndexWriter::new(&parent)?;
    let mut sum = RebuildSummary::default();
    // History inode → image inode number; inodes standing for two files.
    let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
    let mut poisoned: HashSet<(u64, u64)> = HashSet::new();
    let mut done = vec![0u64; (sup.inode_count as usize).div_ceil(64) + 1];

    let root = img.root_node()?;
    for ent in img.read_dir(root.dir().expect("root is a directory"))? {
        let Some(s) = snaps.iter().find(|s| s.name.as_bytes() == ent.name) else {
            continue; // a snapshot history no longer has
        };
        let path = history.join(&s.dir);
        let snap_fd =
            OwnedFd::from(walk::open_dir_path(&path).map_err(|e| io_err("opening", &path, e))?);
        let mut stack: Vec<(Vec<u8>, Node)> = vec![(Vec::new(), img.node(ent.iref)?)];
        while let Some((rel, node)) = stack.pop() {
            let Some(dir) = node.dir() else { continue };
            for e in img.read_dir(dir)? {
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(&e.name);
                let child = img.node(e.iref)?;
                match &child {
                    Node::File(head) => {
                        let inum = head.head.inum as usize;
                        if inum / 64 < done.len() && done[inum / 64] & (1 << (inum % 64)) != 0 {
                            continue; // a hard link of a file already seen
                        }
                        if inum / 64 < done.len() {
                            done[inum / 64] |= 1 << (inum % 64);
                        }
                        sum.files += 1;
                        // Files of a server: <server>/<path>.
                        let Some(slash) = r.iter().position(|b| *b == b'/') else {
                            sum.missing += 1;
                            continue;
                        };
                        let owner = writer.owner(&r[..slash]);
                        match open_beneath(&snap_fd, &r) {
                            Err(_) => sum.missing += 1,
                            Ok(f) => {
                                let st = walk::stat_fd(&f).map_err(|e| {
                                    io_err("reading", &path.join(OsStr::from_bytes(&r)), e)
                                })?;
                                let mtime = st.mtime.clamp(0, u32::MAX as i64) as u32;
                                if !st.is_file() || st.size != head.size || mtime != head.head.mtime
                                {
                                    sum.mismatched += 1;
                                    continue;
                                }
                                let Some(key) = FileKey::of(&st, &f, owner) else {
                                    sum.unkeyed += 1;
                                    continue;
                                };
                                let k = (key.dev, key.ino);
                                if let Some(other) = seen.insert(k, head.head.inum)
                                    && other != head.head.inum
                                {
                                    poisoned.insert(k);
                                    sum.mismatched += 1;
                                    continue;
                                }
                                let layout = img.file_layout(e.iref)?;
                                layout.check(opts.block_size).map_err(|why| {
                                    Error::new(
                                        ErrorKind::Integrity,
                                        format!("image: {}: {why}", show_bytes(&r)),
                                    )
                                })?;
                                writer.push(&key, &layout)?;
                                sum.recorded += 1;
                            }
                        }
                    }
                    Node::Other(_) if child.dir().is_some() => stack.push((r, child)),
                    Node::Other(_) => {}
                }
            }
        }
    }
    // Records of poisoned inodes are dropped: count them out.
    let dropped = poisoned.len() as u64;
    sum.recorded -= dropped.min(sum.recorded);
    sum.mismatched += dropped;
    let fragments = img.fragments()?;
    let header = Header {
        block_size: opts.block_size,
        compressor: opts.compressor.name().to_string(),
        compression_id: opts.compressor.id(),
        level: opts.level,
        compressor_options: options,
        data_start,
        links: links.to_vec(),
        minions: 0,
        fragments: 0,
        records: 0,
        blob_bytes: 0,
    };
    let pending = writer.finish_filtered(header, &fragments, index, &poisoned)?;
    pending
        .persist(index)
        .map_err(|e| io_err("writing the chain index", index, e.error))?;
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing directory", &parent, e))?;
    Ok(sum)
}

/// Open `rel` below `dir` for reading: no symlink anywhere, never above `dir`.
fn open_beneath(dir: &OwnedFd, rel: &[u8]) -> std::io::Result<File> {
    let fd = rustix::fs::openat2(
        dir,
        OsStr::from_bytes(rel),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(File::from(fd))
}

/// Where the compressor options block these settings write ends (it
/// follows the super block).
fn options_end(opts: &PackOptions) -> Result<u64> {
    let level = opts.level.unwrap_or(opts.compressor.default_level());
    let cmp = SqCompressor::new(opts.compressor.id(), opts.block_size, Some(level), false)
        .map_err(|e| Error::invalid_input(e.describe()))?;
    let scratch = tempfile::tempfile().map_err(|e| Error::io("creating a scratch file", e))?;
    let f = SqFile::new(scratch, 0);
    cmp.write_options(&f)
        .map_err(|e| Error::internal(e.describe()))?;
    Ok(f.size())
}
