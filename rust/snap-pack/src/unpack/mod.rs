#![forbid(unsafe_code)]
//! Reading an image back: listing and extracting (all, or selected paths).
//!
//! The image is untrusted input. Every name is checked (no `/`, `.`, `..`,
//! empty or NUL), every file system change is made relative to an open
//! directory descriptor of a directory this run created (`*at` calls with
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, new files with `O_EXCL`), so nothing is
//! ever written outside `dest` or through a symlink.
mod apply;
mod data;
mod extract;
mod frags;
mod image;
mod later;
mod needed;
mod writer;

pub(crate) use image::{Image, Node};
pub use needed::needed;

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags};
use snap_core::{Error, ErrorKind, Progress, Result};

use crate::ffi::{Inode, Present};
use crate::sys;
use crate::util::{io_err, show, show_bytes};

use extract::Extractor;

#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Paths inside the image (raw bytes, `/`-separated, relative, e.g.
    /// `daily.0/db1`) to extract, each with its parent directories; empty:
    /// the whole image.
    pub select: Vec<Vec<u8>>,
    /// Apply rsync `--fake-super` metadata (`user.rsync.%stat`: type, mode,
    /// device, owner) instead of the stored one, and drop that xattr.
    pub apply_fake_super: bool,
    /// With `apply_fake_super`: keep the `user.rsync.%stat` xattr anyway.
    pub keep_fake_super_xattr: bool,
    /// When only part of the image was filled in (a chain restore that
    /// fetched the pieces its selection needs): the bytes there are. Any
    /// read elsewhere fails rather than return a hole's zeros.
    pub present: Option<Arc<Present>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnpackSummary {
    pub dirs: u64,
    pub files: u64,
    pub hardlinks: u64,
    pub symlinks: u64,
    pub specials: u64,
    /// Devices not created because this process may not (not root).
    pub skipped_devices: u64,
    /// Entries whose `user.rsync.%stat` was applied.
    pub fake_super_applied: u64,
    /// `trusted.*`/`security.*` xattrs this process may not set (not root).
    pub skipped_xattrs: u64,
    /// Fragment blocks read (decompressed), by the extractor and the
    /// writers: each about once when files come in the image's order.
    pub fragment_blocks_read: u64,
    /// Files whose fragment block was read before and let go, set aside
    /// and written later grouped by block.
    pub files_set_aside: u64,
    pub bytes_out: u64,
    pub duration: Duration,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
            EntryKind::CharDevice => "chardev",
            EntryKind::BlockDevice => "blockdev",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
        }
    }

    fn from_inode(inode: &Inode) -> Result<Self> {
        Ok(match inode.basic_type() {
            sys::SQFS_INODE_DIR => EntryKind::Dir,
            sys::SQFS_INODE_FILE => EntryKind::File,
            sys::SQFS_INODE_SLINK => EntryKind::Symlink,
            sys::SQFS_INODE_CDEV => EntryKind::CharDevice,
            sys::SQFS_INODE_BDEV => EntryKind::BlockDevice,
            sys::SQFS_INODE_FIFO => EntryKind::Fifo,
            sys::SQFS_INODE_SOCKET => EntryKind::Socket,
            t => {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    format!("image has an inode of unknown type {t}"),
                ));
            }
        })
    }

    fn file_type(self) -> FileType {
        match self {
            EntryKind::Dir => FileType::Directory,
            EntryKind::File => FileType::RegularFile,
            EntryKind::Symlink => FileType::Symlink,
            EntryKind::CharDevice => FileType::CharacterDevice,
            EntryKind::BlockDevice => FileType::BlockDevice,
            EntryKind::Fifo => FileType::Fifo,
            EntryKind::Socket => FileType::Socket,
        }
    }
}

/// One entry of an image, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Path inside the image (raw bytes, no leading `/`).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits incl. setuid/setgid/sticky (no type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub size: u64,
    pub nlink: u32,
    pub inode: u32,
    pub symlink_target: Option<Vec<u8>>,
    /// `(major, minor)` for devices.
    pub rdev: Option<(u32, u32)>,
}

pub(super) fn not_found(comps: &[&[u8]]) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{} is not in the image", show_bytes(&comps.join(&b'/'))),
    )
}

pub(super) fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!("image has an unsafe entry name {:?}", show_bytes(name)),
        ));
    }
    Ok(())
}

/// Split a user-given image path into validated components.
pub(super) fn split_path(p: &[u8]) -> Result<Vec<&[u8]>> {
    if p.first() == Some(&b'/') {
        return Err(Error::invalid_input(format!(
            "path {} must be relative to the image root",
            show_bytes(p)
        )));
    }
    let comps: Vec<&[u8]> = p.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
    for c in &comps {
        if *c == b".." || *c == b"." || c.contains(&0) {
            return Err(Error::invalid_input(format!(
                "path {} may not contain '.', '..' or NUL",
                show_bytes(p)
            )));
        }
    }
    Ok(comps)
}

pub(super) fn decode_dev(devno: u32) -> (u32, u32) {
    let major = (devno >> 8) & 0xfff;
    let minor = (devno & 0xff) | ((devno >> 12) & 0xfff00);
    (major, minor)
}

/// List entries of `image` under `prefix` (raw bytes, relative), down to
/// `depth` levels (1 = direct children of `prefix`; 0 = `prefix` itself).
pub fn list(image: &Path, prefix: &[u8], depth: usize) -> Result<Vec<Entry>> {
    let mut img = Image::open(image)?;
    let comps = split_path(prefix)?;
    let start = img.lookup(&comps)?;
    let base = comps.join(&b'/');
    let mut out = Vec::new();
    if depth == 0 {
        out.push(img.entry(base, &start)?);
        return Ok(out);
    }
    // Depth-first, in stored (name) order.
    let mut stack: Vec<(Vec<u8>, Node, usize)> = vec![(base, start, 0)];
    while let Some((path, node, level)) = stack.pop() {
        let Some(dir) = node.dir() else {
            continue;
        };
        let children = img.read_dir(dir)?;
        let mut sub = Vec::new();
        for ent in children {
            let child = img.node(ent.iref)?;
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&ent.name);
            out.push(img.entry(p.clone(), &child)?);
            if level + 1 < depth {
                sub.push((p, child, level + 1));
            }
        }
        // Keep output in path order: children lists are emitted as we go,
        // sub-directories afterwards, depth-first.
        stack.extend(sub.into_iter().rev());
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Extract `image` (all of it, or `opts.select`) into `dest`, which must be
/// empty or not exist yet.
pub fn unpack(
    image: &Path,
    dest: &Path,
    opts: &UnpackOptions,
    progress: &Progress,
) -> Result<UnpackSummary> {
    let start = Instant::now();
    let selects: Vec<Vec<&[u8]>> = opts
        .select
        .iter()
        .map(|p| split_path(p))
        .collect::<Result<_>>()?;
    let mut img = Image::open_present(image, opts.present.clone())?;
    // Resolve every selected path before creating anything.
    for comps in &selects {
        img.lookup(comps)?;
    }
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            let mut rd = std::fs::read_dir(dest).map_err(|e| io_err("reading", dest, e))?;
            if rd.next().is_some() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("destination {} is not empty", show(dest)),
                ));
            }
        }
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("destination {} exists and is not a directory", show(dest)),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
            }
            // Only this process writes in it while it fills (see below).
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(dest)
                .map_err(|e| io_err("creating", dest, e))?;
        }
        Err(e) => return Err(io_err("checking", dest, e)),
    }
    let dest_fd = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("opening", dest, e.into()))?;
    private(&dest_fd, dest)?;
    let root = rustix::process::geteuid().is_root();
    let image_len = img.file.size();
    let apply = apply::Apply::new(dest, root);
    let ws = (0..writer::writers())
        .map(|_| {
            Ok(writer::Writer {
                image: img
                    .file
                    .file()
                    .try_clone()
                    .map_err(|e| io_err("duplicating the descriptor of", image, e))?,
                len: image_len,
                present: opts.present.clone(),
                image_path: image,
                apply: apply.fresh(),
                frags: img.frags_cached.clone(),
                progress,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (jobs, queue) = std::sync::mpsc::sync_channel(writer::jobs());
    // Held by the writers only: when the last one returns, the queue closes
    // and the extractor's next hand-over fails instead of waiting.
    let queue = Arc::new(Mutex::new(queue));
    let stop = writer::Stop::default();
    let frags = img.frags_cached.clone();
    let (extracted, skipped, panicked, mut sum) = std::thread::scope(|s| {
        let stop = &stop;
        let writers: Vec<_> = ws
            .into_iter()
            .map(|w| {
                let queue = queue.clone();
                s.spawn(move || w.run(queue, stop))
            })
            .collect();
        drop(queue);
        // Built here, so that even a panic drops the hand-over end (in
        // `x.data`) before the scope waits for the writers.
        let mut x = Extractor {
            img,
            opts,
            progress,
            dest_fd,
            apply,
            links: HashMap::new(),
            data: Some(jobs),
            link_dirs: Vec::with_capacity(extract::LINK_DIRS),
            parents: Vec::new(),
            later: Default::default(),
            sum: UnpackSummary::default(),
        };
        let extracted = extract(&mut x, &selects);
        // Hang up, then wait for the files handed over to be written.
        x.data = None;
        let (mut skipped, mut panicked) = (0, false);
        for w in writers {
            match w.join() {
                Ok(n) => skipped += n,
                Err(_) => panicked = true,
            }
        }
        x.sum.skipped_xattrs += x.apply.skipped_xattrs;
        x.sum.files_set_aside = x.later.count;
        (extracted, skipped, panicked, x.sum)
    });
    // A writer's error is the cause when both failed (the extractor then
    // only saw the queue close): the first one a writer met.
    if let Some(e) = stop.into_error() {
        return Err(e);
    }
    if panicked {
        return Err(Error::internal("unpack: a data writer panicked"));
    }
    sum.skipped_xattrs += skipped;
    sum.fragment_blocks_read = frags.reads();
    extracted?;
    progress.finish();
    sum.duration = start.elapsed();
    Ok(sum)
}

/// Refuse a destination someone else can change while unpack fills it:
/// one owned by another user, or one group or others may write to without
/// the sticky bit. Unpack opens some entries again by their path (hard link
/// sources, files set aside, directories' metadata); a racer there could
/// rename a directory unpack made and put its own in its place, or unlink
/// a file and create another (which may get the same inode number), and
/// have root write restored data into files it holds open (cold attacks of
/// 2026-12-01, docs/reviews/2026-12-01-set-aside.md and
/// 2026-12-01-set-aside-2.md). `snap-backup restore` unpacks into a
/// root-only staging directory; a new destination is made 0700.
fn private(fd: &OwnedFd, dest: &Path) -> Result<()> {
    let st = rustix::fs::fstat(fd).map_err(|e| io_err("checking", dest, e.into()))?;
    let me = rustix::process::geteuid().as_raw();
    let shared = st.st_mode & 0o022 != 0 && st.st_mode & 0o1000 == 0;
    if st.st_uid != me || shared {
        return Err(Error::invalid_input(format!(
            "destination {} can be changed by others while the restore runs (owner uid {}, \
             mode {:04o}): unpack into a directory only you can write (a new one is made so)",
            show(dest),
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Extract everything, or each selected path, with `x`.
fn extract(x: &mut Extractor<'_>, selects: &[Vec<&[u8]>]) -> Result<()> {
    if selects.is_empty() {
        let root = x.img.root()?;
        let fd = x
            .dest_fd
            .try_clone()
            .map_err(|e| io_err("duplicating", &x.apply.dest, e))?;
        x.tree(fd, Vec::new(), root, false)?;
        x.write_later()?;
    } else {
        let mut done: Vec<Vec<&[u8]>> = Vec::new();
        for comps in selects {
            // Skip a path already covered by an earlier selection.
            if done.iter().any(|d| comps.starts_with(d)) {
                continue;
            }
            x.select(comps)?;
            done.push(comps.clone());
        }
        x.write_later()?;
        // Parents created for the selections get their metadata last, deepest first.
        let parents = std::mem::take(&mut x.parents);
        for (pfd, prel, a) in parents.iter().rev() {
            x.apply.finish_fd(pfd, a, prel)?;
        }
    }
    Ok(())
}
