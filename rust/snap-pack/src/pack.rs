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

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use xattr::FileExt as _;

use snap_core::{Error, ErrorKind, Progress, Result};

use crate::ffi::{
    self, BlockProcessor, BlockWriter, Compressor as SqCompressor, DirWriter, FragTable, IdTable,
    Inode, MetaWriter, SqFile, XattrWriter,
};
use crate::sys;
use crate::util::{io_err, show, show_os, sq_err};
use crate::walk::{self, St};

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
    /// Unique file data read (hardlinked data counted once).
    pub bytes_in: u64,
    pub image_size: u64,
    pub duration: Duration,
}

// ------------------------------------------------------------------ walking

fn selected(sel: Option<&Selection>, depth: usize, name: &CStr) -> bool {
    match sel {
        Some(s) if s.depth == depth => s.names.contains(OsStr::from_bytes(name.to_bytes())),
        _ => true,
    }
}

fn xattr_supported(name: &[u8]) -> bool {
    for p in [&b"user."[..], b"trusted.", b"security."] {
        if name.len() > p.len() && name.starts_with(p) {
            return name.len() - p.len() <= u16::MAX as usize;
        }
    }
    false
}

/// Where to read xattrs from: an open descriptor (files, directories) or,
/// for symlinks and special files, a path (not followed).
#[derive(Clone, Copy)]
enum XSrc<'a> {
    Fd(&'a File),
    Path(&'a Path),
}

/// Xattrs to store (sorted by name) and how many were skipped.
type XattrList = (Vec<(CString, Vec<u8>)>, u64);

/// Read all xattrs of an entry, sorted by name. Returns the pairs to store
/// and the number of unsupported ones skipped.
fn read_xattrs(src: XSrc<'_>, policy: UnsupportedXattrs) -> std::result::Result<XattrList, String> {
    let listed = match src {
        XSrc::Fd(f) => f.list_xattr(),
        XSrc::Path(p) => xattr::list(p),
    };
    let names = match listed {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok((Vec::new(), 0)),
        Err(e) => return Err(format!("cannot list xattrs: {e}")),
    };
    let mut out = Vec::new();
    let mut skipped = 0;
    for name in names {
        let raw = name.as_bytes();
        if !xattr_supported(raw) {
            match policy {
                UnsupportedXattrs::Refuse => {
                    return Err(format!(
                        "xattr {} cannot be stored in SquashFS (only user., trusted., security.)",
                        show_os(&name)
                    ));
                }
                UnsupportedXattrs::Skip => {
                    skipped += 1;
                    continue;
                }
            }
        }
        let got = match src {
            XSrc::Fd(f) => f.get_xattr(&name),
            XSrc::Path(p) => xattr::get(p, &name),
        };
        let value = match got {
            Ok(Some(v)) => v,
            Ok(None) => continue, // vanished between list and get
            Err(e) => return Err(format!("cannot read xattr {}: {e}", show_os(&name))),
        };
        let key = CString::new(raw.to_vec()).map_err(|_| "xattr name with NUL".to_string())?;
        out.push((key, value));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok((out, skipped))
}

fn known_type(st: &St) -> bool {
    matches!(
        st.fmt(),
        libc::S_IFDIR
            | libc::S_IFREG
            | libc::S_IFLNK
            | libc::S_IFIFO
            | libc::S_IFSOCK
            | libc::S_IFCHR
            | libc::S_IFBLK
    )
}

// ------------------------------------------------------------------ pre-pass

const MAX_PROBLEMS: usize = 10;

struct Scan {
    /// Every non-directory inode with st_nlink > 1; `remaining` = its
    /// number of links inside the packed tree.
    links: Links,
    data_bytes: u64,
}

struct Problems {
    list: Vec<String>,
}

impl Problems {
    fn add(&mut self, path: &Path, what: impl std::fmt::Display) -> bool {
        self.list.push(format!("{}: {what}", show(path)));
        self.list.len() >= MAX_PROBLEMS
    }
}

fn prescan(src: &Path, opts: &PackOptions) -> Result<Scan> {
    let mut scan = Scan {
        links: Links::new(0),
        data_bytes: 0,
    };
    let mut problems = Problems { list: Vec::new() };
    let mut ids: HashSet<u32> = HashSet::new();
    let sel = opts.selection.as_ref();
    let policy = opts.unsupported_xattrs;

    let st = walk::stat_path(src).map_err(|e| io_err("reading", src, e))?;
    if !st.is_dir() {
        return Err(Error::invalid_input(format!(
            "{} is not a directory",
            show(src)
        )));
    }
    let root = walk::open_dir_path(src).map_err(|e| io_err("opening", src, e))?;
    scan.links.dev = st.dev;
    ids.insert(st.uid);
    ids.insert(st.gid);
    let mut full = false;
    if let Err(msg) = read_xattrs(XSrc::Fd(&root), policy) {
        full = problems.add(src, msg);
    }
    let names = walk::list(&root).map_err(|e| io_err("listing", src, e))?;
    // Open directories: descriptor, remaining names, depth of the names.
    let mut stack: Vec<(File, std::vec::IntoIter<CString>, usize)> =
        vec![(root, names.into_iter(), 1)];
    let mut path = src.to_path_buf();
    while !full {
        let Some((dir, names, depth)) = stack.last_mut() else {
            break;
        };
        let depth = *depth;
        let Some(name) = names.next() else {
            stack.pop();
            if !stack.is_empty() {
                path.pop();
            }
            continue;
        };
        if !selected(sel, depth, &name) {
            continue;
        }
        path.push(OsStr::from_bytes(name.to_bytes()));
        let st = match walk::stat_at(dir, &name) {
            Ok(st) => st,
            Err(e) => {
                full = problems.add(&path, format_args!("cannot stat: {e}"));
                path.pop();
                continue;
            }
        };
        ids.insert(st.uid);
        ids.insert(st.gid);
        if st.linked() {
            let link = scan.links.entry((st.dev, st.ino));
            link.remaining += 1;
            if link.remaining > 1 {
                path.pop(); // xattrs, data and readability already checked
                continue;
            }
        }
        let opened = if st.is_dir() {
            walk::open_dir_at(dir, &name).map_err(|e| format!("cannot list directory: {e}"))
        } else if st.is_file() {
            scan.data_bytes += st.size;
            walk::open_file_at(dir, &name).map_err(|e| format!("cannot read: {e}"))
        } else if st.is_symlink() {
            match walk::readlink_at(dir, &name) {
                Ok(_) => Err(String::new()),
                Err(e) => Err(format!("cannot read symlink: {e}")),
            }
        } else if known_type(&st) {
            Err(String::new())
        } else {
            Err("unsupported file type".to_string())
        };
        let xsrc = match &opened {
            Ok(f) => XSrc::Fd(f),
            Err(msg) if msg.is_empty() => XSrc::Path(&path),
            Err(msg) => {
                full = problems.add(&path, msg);
                path.pop();
                continue;
            }
        };
        if let Err(msg) = read_xattrs(xsrc, policy) {
            full = problems.add(&path, msg);
        }
        if st.is_dir() {
            let dirf = opened.expect("opened directory");
            match walk::list(&dirf) {
                Ok(names) => {
                    stack.push((dirf, names.into_iter(), depth + 1));
                    continue; // path stays pushed until the directory is done
                }
                Err(e) => full = problems.add(&path, format_args!("cannot list directory: {e}")),
            }
        }
        path.pop();
    }
    if ids.len() > 65536 {
        problems.list.push(format!(
            "{} distinct uids/gids; SquashFS stores at most 65536",
            ids.len()
        ));
    }
    if !problems.list.is_empty() {
        let more = if full {
            " (stopped at the first ten)"
        } else {
            ""
        };
        return Err(Error::invalid_input(format!(
            "refusing to pack {}: {} problem(s){more}: {}",
            show(src),
            problems.list.len(),
            problems.list.join("; ")
        )));
    }
    Ok(scan)
}

// ------------------------------------------------------------------ data pass

/// Where an entry's inode is: written (number and reference) or waiting in
/// the pending queue (index into `Packer::slots`).
#[derive(Clone, Copy)]
enum Target {
    Known { inum: u32, iref: u64 },
    Slot(u32),
}

struct Entry {
    name: CString,
    mode: u16,
    target: Target,
}

#[derive(Clone, Copy)]
struct Meta {
    mode: u16,
    uid_idx: u16,
    gid_idx: u16,
    mtime: u32,
    xattr: u32,
}

enum Slot {
    /// A file whose data is still being compressed (its inode is the next
    /// one the block processor hands back).
    File {
        inum: u32,
        meta: Meta,
        nlink: u32,
        link_key: Option<(u64, u64)>,
    },
    /// A finished directory with an entry that waits for a file.
    Dir {
        inum: u32,
        parent: u32,
        meta: Meta,
        subdirs: u32,
        entries: Vec<Entry>,
    },
}

/// Per hardlinked inode while some of its links are unseen. 24 bytes (8-byte
/// inode number key + 16-byte value) plus a control byte in a hash map: about
/// 28-57 bytes per inode depending on the table's fill.
#[derive(Clone, Copy)]
struct Link {
    /// Links inside the tree not seen yet (pre-pass: the in-tree count).
    remaining: u32,
    /// Inode number once written or queued; 0 before.
    inum: u32,
    /// Inode reference, or `SLOT | index` while queued.
    loc: u64,
}

const SLOT: u64 = 1 << 63;

impl Link {
    fn target(&self) -> Target {
        if self.loc & SLOT != 0 {
            Target::Slot(self.loc as u32)
        } else {
            Target::Known {
                inum: self.inum,
                iref: self.loc,
            }
        }
    }

    fn set(&mut self, t: Target) {
        self.loc = match t {
            Target::Slot(j) => SLOT | j as u64,
            Target::Known { iref, .. } => iref,
        };
    }
}

/// Hard-linked inodes by (device, inode). Keyed by inode number alone for
/// the source's own device (the usual case), by both for others.
struct Links {
    dev: u64,
    main: HashMap<u64, Link>,
    other: HashMap<(u64, u64), Link>,
}

impl Links {
    fn new(dev: u64) -> Links {
        Links {
            dev,
            main: HashMap::new(),
            other: HashMap::new(),
        }
    }

    fn entry(&mut self, key: (u64, u64)) -> &mut Link {
        let fresh = Link {
            remaining: 0,
            inum: 0,
            loc: 0,
        };
        if key.0 == self.dev {
            self.main.entry(key.1).or_insert(fresh)
        } else {
            self.other.entry(key).or_insert(fresh)
        }
    }

    fn get_mut(&mut self, key: (u64, u64)) -> Option<&mut Link> {
        if key.0 == self.dev {
            self.main.get_mut(&key.1)
        } else {
            self.other.get_mut(&key)
        }
    }

    fn remove(&mut self, key: (u64, u64)) {
        if key.0 == self.dev {
            self.main.remove(&key.1);
        } else {
            self.other.remove(&key);
        }
    }

    fn len(&self) -> usize {
        self.main.len() + self.other.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Frame {
    dir: File,
    name: CString,
    names: std::vec::IntoIter<CString>,
    depth: usize,
    inum: u32,
    parent: u32,
    meta: Meta,
    subdirs: u32,
    entries: Vec<Entry>,
}

/// Data blocks in flight per compression thread (each up to one block in size).
const BACKLOG_PER_THREAD: u32 = 16;

struct Packer<'a> {
    opts: &'a PackOptions,
    progress: &'a Progress,
    image_path: &'a Path,
    image: Rc<SqFile>,
    itab: Rc<SqFile>,
    dtab: Rc<SqFile>,
    cmp: Rc<SqCompressor>,
    // Drop order matters: the processor (and its worker threads) first.
    bp: BlockProcessor,
    im: MetaWriter,
    dw: DirWriter,
    ids: IdTable,
    xw: XattrWriter,
    frag: Rc<FragTable>,
    slots: Vec<Slot>,
    pending_entries: usize,
    links: Links,
    next_inum: u32,
    buf: Vec<u8>,
    sum: PackSummary,
}

fn clamp_mtime(st: &St, sum: &mut PackSummary) -> u32 {
    let t = st.mtime;
    if t < 0 || t > u32::MAX as i64 {
        sum.clamped_mtimes += 1;
        t.clamp(0, u32::MAX as i64) as u32
    } else {
        t as u32
    }
}

/// Linux "new" device number encoding, as the kernel's squashfs expects.
fn encode_dev(rdev: u64) -> u32 {
    let major = libc::major(rdev) as u32;
    let minor = libc::minor(rdev) as u32;
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

impl<'a> Packer<'a> {
    fn sq(&self, e: ffi::SqfsError) -> Error {
        sq_err(
            e,
            &[
                (&self.image, self.image_path),
                (&self.itab, self.image_path),
                (&self.dtab, self.image_path),
            ],
        )
    }

    fn changed(&self, path: &Path, what: &str) -> Error {
        Error::new(
            ErrorKind::Io,
            format!("{} changed during pack ({what}); try again", show(path)),
        )
    }

    fn meta_of(&mut self, xsrc: XSrc<'_>, path: &Path, meta: &St) -> Result<Meta> {
        let uid_idx = self.ids.index(meta.uid).map_err(|e| self.sq(e))?;
        let gid_idx = self.ids.index(meta.gid).map_err(|e| self.sq(e))?;
        let (pairs, skipped) = read_xattrs(xsrc, self.opts.unsupported_xattrs)
            .map_err(|m| Error::new(ErrorKind::Io, format!("{}: {m}", show(path))))?;
        self.sum.skipped_xattrs += skipped;
        let xattr = if pairs.is_empty() {
            0xFFFF_FFFF
        } else {
            self.sum.xattr_entries += 1;
            self.xw.add_set(&pairs).map_err(|e| self.sq(e))?
        };
        Ok(Meta {
            mode: (meta.mode & 0o7777) as u16,
            uid_idx,
            gid_idx,
            mtime: clamp_mtime(meta, &mut self.sum),
            xattr,
        })
    }

    fn new_inum(&mut self) -> Result<u32> {
        let n = self.next_inum;
        self.next_inum = n
            .checked_add(1)
            .ok_or_else(|| Error::invalid_input("more than 2^32 inodes"))?;
        self.sum.inodes += 1;
        Ok(n)
    }

    fn apply(&self, inode: &mut Inode, inum: u32, meta: &Meta, nlink: u32) -> Result<()> {
        let b = inode.base_mut();
        b.mode = meta.mode;
        b.uid_idx = meta.uid_idx;
        b.gid_idx = meta.gid_idx;
        b.mod_time = meta.mtime;
        b.inode_number = inum;
        inode.set_nlink(nlink).map_err(|e| self.sq(e))?;
        inode.set_xattr_index(meta.xattr).map_err(|e| self.sq(e))
    }

    fn write_inode(&mut self, inode: &Inode) -> Result<u64> {
        match self.im.write_inode(inode) {
            Ok(r) => Ok(r),
            Err(e) => Err(self.sq(e)),
        }
    }

    /// Handle one non-directory entry; returns its target.
    fn add_leaf(&mut self, dir: &File, name: &CStr, path: &Path, meta: &St) -> Result<Target> {
        let key = (meta.dev, meta.ino);
        let mut nlink = 1;
        if meta.linked() {
            match self.links.get_mut(key) {
                None => return Err(self.changed(path, "new hard link")),
                Some(link) if link.inum != 0 => {
                    link.remaining -= 1;
                    let t = link.target();
                    if link.remaining == 0 {
                        self.links.remove(key);
                    }
                    self.sum.hardlinks += 1;
                    return Ok(t);
                }
                Some(link) => nlink = link.remaining,
            }
        }
        let inum = self.new_inum()?;
        let target = if meta.is_file() {
            self.sum.files += 1;
            let f = walk::open_file_at(dir, name).map_err(|e| io_err("opening", path, e))?;
            let m = self.meta_of(XSrc::Fd(&f), path, meta)?;
            match self.add_file(f, path, meta)? {
                Some(mut inode) => {
                    self.apply(&mut inode, inum, &m, nlink)?;
                    Target::Known {
                        inum,
                        iref: self.write_inode(&inode)?,
                    }
                }
                None => {
                    self.slots.push(Slot::File {
                        inum,
                        meta: m,
                        nlink,
                        link_key: meta.linked().then_some(key),
                    });
                    Target::Slot(self.slots.len() as u32 - 1)
                }
            }
        } else {
            let m = self.meta_of(XSrc::Path(path), path, meta)?;
            let mut inode = if meta.is_symlink() {
                self.sum.symlinks += 1;
                let t =
                    walk::readlink_at(dir, name).map_err(|e| io_err("reading symlink", path, e))?;
                let mut i = Inode::alloc(sys::SQFS_INODE_SLINK, &t).map_err(|e| self.sq(e))?;
                i.data_mut().slink.target_size = t.len() as u32;
                i
            } else {
                self.sum.specials += 1;
                let (ty, dev) = match meta.fmt() {
                    libc::S_IFCHR => (sys::SQFS_INODE_CDEV, true),
                    libc::S_IFBLK => (sys::SQFS_INODE_BDEV, true),
                    libc::S_IFIFO => (sys::SQFS_INODE_FIFO, false),
                    libc::S_IFSOCK => (sys::SQFS_INODE_SOCKET, false),
                    _ => {
                        return Err(Error::invalid_input(format!(
                            "{}: unsupported file type",
                            show(path)
                        )));
                    }
                };
                let mut i = Inode::alloc(ty, &[]).map_err(|e| self.sq(e))?;
                if dev {
                    i.data_mut().dev.devno = encode_dev(meta.rdev);
                }
                i
            };
            self.apply(&mut inode, inum, &m, nlink)?;
            Target::Known {
                inum,
                iref: self.write_inode(&inode)?,
            }
        };
        if meta.linked() {
            let link = self.links.get_mut(key).expect("link entry");
            link.inum = inum;
            link.set(target);
            link.remaining -= 1;
            if link.remaining == 0 {
                self.links.remove(key);
            }
        }
        Ok(target)
    }

    /// Feed a regular file to the block processor. Returns the inode at
    /// once for an empty file, `None` if it waits for compression.
    fn add_file(&mut self, mut f: File, path: &Path, meta: &St) -> Result<Option<Inode>> {
        let expect = meta.size;
        self.bp.begin_file().map_err(|e| self.sq(e))?;
        let mut total = 0u64;
        loop {
            let n = match f.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = self.bp.end_file();
                    return Err(io_err("reading", path, e));
                }
            };
            total += n as u64;
            if total > expect {
                let _ = self.bp.end_file();
                return Err(self.changed(path, "file grew"));
            }
            if let Err(e) = self.bp.append(&self.buf[..n]) {
                return Err(self.sq(e));
            }
            self.progress.add(n as u64);
        }
        self.sum.bytes_in += total;
        let done = self.bp.end_file().map_err(|e| self.sq(e))?;
        if total != expect {
            return Err(self.changed(path, "file shrank"));
        }
        Ok(done)
    }

    /// Write a finished directory whose entries are all known.
    fn write_dir(
        &mut self,
        inum: u32,
        parent: u32,
        meta: &Meta,
        subdirs: u32,
        entries: &[Entry],
    ) -> Result<Target> {
        let mut it = entries.iter().map(|e| match e.target {
            Target::Known { inum, iref } => (e.name.as_c_str(), inum, iref, e.mode),
            Target::Slot(_) => unreachable!("unresolved entry"),
        });
        let mut inode = self
            .dw
            .write_dir(&mut it, meta.xattr, parent)
            .map_err(|e| self.sq(e))?;
        drop(it);
        self.apply(&mut inode, inum, meta, 2 + subdirs)?;
        let iref = self.write_inode(&inode)?;
        Ok(Target::Known { inum, iref })
    }

    /// Finish a directory: write it now if every entry is known, else queue it.
    fn close_dir(&mut self, f: Frame) -> Result<Target> {
        let pending = f
            .entries
            .iter()
            .any(|e| matches!(e.target, Target::Slot(_)));
        if !pending {
            return self.write_dir(f.inum, f.parent, &f.meta, f.subdirs, &f.entries);
        }
        self.pending_entries += f.entries.len();
        self.slots.push(Slot::Dir {
            inum: f.inum,
            parent: f.parent,
            meta: f.meta,
            subdirs: f.subdirs,
            entries: f.entries,
        });
        Ok(Target::Slot(self.slots.len() as u32 - 1))
    }

    fn should_flush(&self) -> bool {
        let max = self.opts.max_pending.max(1);
        self.slots.len() >= max || self.pending_entries >= max.saturating_mul(8)
    }

    /// Wait for the data of all queued files, then write every queued inode
    /// and directory, and resolve the entries of the open directories.
    fn flush(&mut self, stack: &mut [Frame], finish: bool) -> Result<Vec<Target>> {
        let inodes = if finish {
            self.bp.finish()
        } else {
            self.bp.sync()
        }
        .map_err(|e| self.sq(e))?;
        let mut inodes = inodes.into_iter();
        let slots = std::mem::take(&mut self.slots);
        let mut resolved: Vec<Target> = Vec::with_capacity(slots.len());
        for slot in slots {
            let t = match slot {
                Slot::File {
                    inum,
                    meta,
                    nlink,
                    link_key,
                } => {
                    let mut inode = inodes
                        .next()
                        .ok_or_else(|| Error::internal("pack: fewer file inodes than slots"))?;
                    self.apply(&mut inode, inum, &meta, nlink)?;
                    let t = Target::Known {
                        inum,
                        iref: self.write_inode(&inode)?,
                    };
                    if let Some(key) = link_key
                        && let Some(link) = self.links.get_mut(key)
                    {
                        link.set(t);
                    }
                    t
                }
                Slot::Dir {
                    inum,
                    parent,
                    meta,
                    subdirs,
                    mut entries,
                } => {
                    for e in &mut entries {
                        if let Target::Slot(j) = e.target {
                            e.target = resolved[j as usize];
                        }
                    }
                    self.write_dir(inum, parent, &meta, subdirs, &entries)?
                }
            };
            resolved.push(t);
        }
        if inodes.next().is_some() {
            return Err(Error::internal("pack: more file inodes than slots"));
        }
        for f in stack.iter_mut() {
            for e in &mut f.entries {
                if let Target::Slot(j) = e.target {
                    e.target = resolved[j as usize];
                }
            }
        }
        self.pending_entries = 0;
        Ok(resolved)
    }

    fn open_frame(
        &mut self,
        dir: File,
        path: &Path,
        name: CString,
        meta: &St,
        depth: usize,
        parent: Option<u32>,
    ) -> Result<Frame> {
        let inum = self.new_inum()?;
        self.sum.dirs += 1;
        let m = self.meta_of(XSrc::Fd(&dir), path, meta)?;
        let names = walk::list(&dir).map_err(|e| io_err("listing", path, e))?;
        Ok(Frame {
            dir,
            name,
            names: names.into_iter(),
            depth,
            inum,
            parent: parent.unwrap_or(0),
            meta: m,
            subdirs: 0,
            entries: Vec::new(),
        })
    }

    /// The walk. Returns the root's reference.
    fn run(&mut self, src: &Path) -> Result<u64> {
        let sel = self.opts.selection.clone();
        let mut path = src.to_path_buf();
        let meta = walk::stat_path(&path).map_err(|e| io_err("reading", &path, e))?;
        let dir = walk::open_dir_path(&path).map_err(|e| io_err("opening", &path, e))?;
        let root = self.open_frame(dir, &path, CString::default(), &meta, 1, None)?;
        let mut stack = vec![root];
        let root_target = loop {
            let top = stack.last_mut().expect("stack");
            let Some(name) = top.names.next() else {
                let mut f = stack.pop().expect("frame");
                if stack.is_empty() {
                    // Like mksquashfs: the root's parent is one past the last inode.
                    f.parent = self.next_inum;
                }
                let name = f.name.clone();
                let target = self.close_dir(f)?;
                match stack.last_mut() {
                    None => break target,
                    Some(parent) => {
                        parent.subdirs += 1;
                        parent.entries.push(Entry {
                            name,
                            mode: libc::S_IFDIR as u16,
                            target,
                        });
                        path.pop();
                    }
                }
                if self.should_flush() {
                    self.flush(&mut stack, false)?;
                }
                continue;
            };
            let depth = top.depth;
            let parent_inum = top.inum;
            if !selected(sel.as_ref(), depth, &name) {
                continue;
            }
            path.push(OsStr::from_bytes(name.to_bytes()));
            let meta = walk::stat_at(&top.dir, &name).map_err(|e| io_err("reading", &path, e))?;
            if meta.is_dir() {
                let dir =
                    walk::open_dir_at(&top.dir, &name).map_err(|e| io_err("opening", &path, e))?;
                let f = self.open_frame(dir, &path, name, &meta, depth + 1, Some(parent_inum))?;
                stack.push(f);
                continue;
            }
            let target = self.add_leaf(&top.dir, &name, &path, &meta)?;
            let mode = meta.fmt() as u16;
            stack
                .last_mut()
                .expect("frame")
                .entries
                .push(Entry { name, mode, target });
            path.pop();
            if self.should_flush() {
                self.flush(&mut stack, false)?;
            }
        };
        // Everything is walked: write what is still queued, root last.
        let mut none: [Frame; 0] = [];
        let resolved = self.flush(&mut none, true)?;
        let root_target = match root_target {
            Target::Slot(j) => resolved[j as usize],
            t => t,
        };
        match root_target {
            Target::Known { iref, .. } => Ok(iref),
            Target::Slot(_) => Err(Error::internal("pack: root not written")),
        }
    }
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
    let bs = opts.block_size;
    if !(4096..=1 << 20).contains(&bs) || !bs.is_power_of_two() {
        return Err(Error::invalid_input(format!(
            "block size {bs} is not a power of two between 4 KiB and 1 MiB"
        )));
    }
    if let Some(sel) = &opts.selection
        && sel.depth == 0
    {
        return Err(Error::invalid_input("selection depth must be at least 1"));
    }
    let threads = match opts.threads {
        Some(0) => return Err(Error::invalid_input("threads must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
    .min(256) as u32;
    let level = opts.level.unwrap_or(opts.compressor.default_level());
    // Check the compressor settings before scanning a large tree.
    let cmp = Rc::new(
        SqCompressor::new(opts.compressor.id(), bs, Some(level), false).map_err(|e| {
            Error::invalid_input(format!(
                "compressor {} level {level}: {}",
                opts.compressor.name(),
                e.describe()
            ))
        })?,
    );
    let uncmp = Rc::new(
        SqCompressor::new(opts.compressor.id(), bs, Some(level), true)
            .map_err(|e| sq_err(e, &[]))?,
    );
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

    let scan = prescan(src, opts)?;
    progress.set_total(scan.data_bytes);

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
    let itab_file =
        tempfile::tempfile_in(&dir).map_err(|e| io_err("creating a temporary file in", &dir, e))?;
    let dtab_file =
        tempfile::tempfile_in(&dir).map_err(|e| io_err("creating a temporary file in", &dir, e))?;
    let image_sq = Rc::new(SqFile::new(image_file, 0));
    let itab = Rc::new(SqFile::new(itab_file, 0));
    let dtab = Rc::new(SqFile::new(dtab_file, 0));
    let files =
        |e: ffi::SqfsError| sq_err(e, &[(&image_sq, image), (&itab, image), (&dtab, image)]);

    let root_meta = walk::stat_path(src).map_err(|e| io_err("reading", src, e))?;
    let mut sup = ffi::super_init(
        bs,
        root_meta.mtime.clamp(0, u32::MAX as i64) as u32,
        opts.compressor.id(),
    )
    .map_err(files)?;
    ffi::super_write(&sup, &image_sq).map_err(files)?;
    if cmp.write_options(&image_sq).map_err(files)? {
        sup.flags |= sys::SQFS_FLAG_COMPRESSOR_OPTIONS as u16;
    }
    let bw = Rc::new(BlockWriter::new(image_sq.clone()).map_err(files)?);
    let frag = Rc::new(FragTable::new().map_err(files)?);
    let bp = BlockProcessor::new(
        bs,
        threads,
        threads * BACKLOG_PER_THREAD,
        cmp.clone(),
        uncmp,
        bw,
        frag.clone(),
        image_sq.clone(),
    )
    .map_err(files)?;
    let im = MetaWriter::new(itab.clone(), cmp.clone()).map_err(files)?;
    let dm = Rc::new(RefCell::new(
        MetaWriter::new(dtab.clone(), cmp.clone()).map_err(files)?,
    ));
    let dw = DirWriter::new(dm.clone()).map_err(files)?;

    let mut p = Packer {
        opts,
        progress,
        image_path: image,
        image: image_sq.clone(),
        itab: itab.clone(),
        dtab: dtab.clone(),
        cmp: cmp.clone(),
        bp,
        im,
        dw,
        ids: IdTable::new().map_err(files)?,
        xw: XattrWriter::new().map_err(files)?,
        frag,
        slots: Vec::new(),
        pending_entries: 0,
        links: scan.links,
        next_inum: 1,
        buf: vec![0u8; bs as usize],
        sum: PackSummary::default(),
    };
    let root_ref = p.run(src)?;
    if !p.links.is_empty() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{}: {} hard-linked file(s) lost links during pack; try again",
                show(src),
                p.links.len()
            ),
        ));
    }
    p.finish_tables(&mut sup, &dm, root_ref)?;
    let mut sum = std::mem::take(&mut p.sum);
    drop(p);
    drop(dm);

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

impl Packer<'_> {
    /// After the walk: append the inode and directory tables, then the
    /// fragment, id and xattr tables, and write the final super block.
    fn finish_tables(
        &mut self,
        sup: &mut ffi::Super,
        dm: &Rc<RefCell<MetaWriter>>,
        root_ref: u64,
    ) -> Result<()> {
        self.im.flush().map_err(|e| self.sq(e))?;
        dm.borrow_mut().flush().map_err(|e| self.sq(e))?;
        sup.inode_table_start = self.image.size();
        self.append_table(&self.itab.clone())?;
        sup.directory_table_start = self.image.size();
        self.append_table(&self.dtab.clone())?;
        self.frag
            .write(&self.image, sup, &self.cmp)
            .map_err(|e| self.sq(e))?;
        self.ids
            .write(&self.image, sup, &self.cmp)
            .map_err(|e| self.sq(e))?;
        self.xw
            .flush(&self.image, sup, &self.cmp)
            .map_err(|e| self.sq(e))?;
        sup.inode_count = self.next_inum - 1;
        sup.root_inode_ref = root_ref;
        sup.flags &= !(sys::SQFS_FLAG_NO_DUPLICATES as u16);
        sup.bytes_used = self.image.size();
        ffi::super_write(sup, &self.image).map_err(|e| self.sq(e))?;
        // Pad to 4 KiB like mksquashfs, so the image suits loop devices.
        let pad = (4096 - self.image.size() % 4096) % 4096;
        if pad > 0 {
            self.image
                .append(&vec![0u8; pad as usize])
                .map_err(|e| io_err("writing", self.image_path, e))?;
        }
        Ok(())
    }

    fn append_table(&self, table: &SqFile) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        let len = table.size();
        while off < len {
            let n = ((len - off) as usize).min(buf.len());
            std::os::unix::fs::FileExt::read_exact_at(table.file(), &mut buf[..n], off)
                .map_err(|e| io_err("reading back a temporary table for", self.image_path, e))?;
            self.image
                .append(&buf[..n])
                .map_err(|e| io_err("writing", self.image_path, e))?;
            off += n as u64;
        }
        Ok(())
    }
}
