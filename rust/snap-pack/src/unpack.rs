#![forbid(unsafe_code)]
//! Reading an image back: listing and extracting (all, or selected paths).
//!
//! The image is untrusted input. Every name is checked (no `/`, `.`, `..`,
//! empty or NUL), every file system change is made relative to an open
//! directory descriptor of a directory this run created (`*at` calls with
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, new files with `O_EXCL`), so nothing is
//! ever written outside `dest` or through a symlink.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::process::{Gid, Uid};
use snap_core::{Error, ErrorKind, Progress, Result};

use crate::fakesuper::FakeStat;
use crate::ffi::{
    self, Compressor, DataReader, DirEnt, IdTable, Inode, MetaTables, SqFile, XattrReader,
};
use crate::sys;
use crate::util::{io_err, show, show_bytes, sq_err};

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

/// An open image.
struct Image {
    path: PathBuf,
    file: Rc<SqFile>,
    sup: Rc<ffi::Super>,
    meta: MetaTables,
    data: DataReader,
    xattrs: Option<XattrReader>,
    ids: IdTable,
}

impl Image {
    fn open(path: &Path) -> Result<Image> {
        let f = File::open(path).map_err(|e| io_err("opening image", path, e))?;
        let len = f.metadata().map_err(|e| io_err("reading", path, e))?.len();
        let file = Rc::new(SqFile::new(f, len));
        let err = |e: ffi::SqfsError| {
            let file = file.clone();
            if let Some(io) = file.take_error() {
                return io_err("reading image", path, io).context(e.describe());
            }
            sq_err(e, &[]).context(format!("image {}", show(path)))
        };
        let sup = Rc::new(ffi::super_read(&file).map_err(err)?);
        let cmp = Rc::new(
            Compressor::new(sup.compression_id as u32, sup.block_size, None, true).map_err(
                |e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "image {}: compressor id {} cannot be read here ({})",
                            show(path),
                            sup.compression_id,
                            e.describe()
                        ),
                    )
                },
            )?,
        );
        if sup.flags & sys::SQFS_FLAG_COMPRESSOR_OPTIONS as u16 != 0 {
            cmp.read_options(&file).map_err(err)?;
        }
        let meta = MetaTables::new(sup.clone(), cmp.clone(), file.clone()).map_err(err)?;
        let data = DataReader::new(&sup, cmp.clone(), file.clone()).map_err(err)?;
        let xattrs = if sup.flags & sys::SQFS_FLAG_NO_XATTRS as u16 == 0
            && sup.xattr_id_table_start != u64::MAX
        {
            Some(XattrReader::new(&sup, cmp.clone(), file.clone()).map_err(err)?)
        } else {
            None
        };
        let ids = IdTable::read(&file, &sup, &cmp).map_err(err)?;
        Ok(Image {
            path: path.to_path_buf(),
            file,
            sup,
            meta,
            data,
            xattrs,
            ids,
        })
    }

    fn err(&self, e: ffi::SqfsError) -> Error {
        if let Some(io) = self.file.take_error() {
            return io_err("reading image", &self.path, io).context(e.describe());
        }
        sq_err(e, &[]).context(format!("image {}", show(&self.path)))
    }

    /// Entries of a directory inode, in stored order (inodes not read).
    fn read_dir(&mut self, dir: &Inode) -> Result<Vec<DirEnt>> {
        let entries = match self.meta.read_dir(dir) {
            Ok(e) => e,
            Err(e) => return Err(self.err(e)),
        };
        for e in &entries {
            check_name(&e.name)?;
        }
        Ok(entries)
    }

    fn inode(&mut self, iref: u64) -> Result<Inode> {
        match self.meta.inode(iref) {
            Ok(i) => Ok(i),
            Err(e) => Err(self.err(e)),
        }
    }

    fn root(&mut self) -> Result<Inode> {
        match self.meta.root_inode() {
            Ok(i) => Ok(i),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The inode at `path` (components already validated).
    fn lookup(&mut self, comps: &[&[u8]]) -> Result<Inode> {
        let mut cur = self.root()?;
        for (i, c) in comps.iter().enumerate() {
            if EntryKind::from_inode(&cur)? != EntryKind::Dir {
                return Err(not_found(&comps[..i]));
            }
            let entries = self.read_dir(&cur)?;
            match entries.into_iter().find(|e| e.name == *c) {
                Some(e) => cur = self.inode(e.iref)?,
                None => return Err(not_found(&comps[..=i])),
            }
        }
        Ok(cur)
    }

    fn xattrs_of(&mut self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let idx = inode.xattr_index();
        if idx == 0xFFFF_FFFF {
            return Ok(Vec::new());
        }
        let Some(xr) = self.xattrs.as_mut() else {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "image {}: xattr index without xattr table",
                    show(&self.path)
                ),
            ));
        };
        match xr.get(idx) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    fn owner(&self, inode: &Inode) -> Result<(u32, u32)> {
        let b = inode.base();
        let uid = self.ids.id(b.uid_idx).map_err(|e| self.err(e))?;
        let gid = self.ids.id(b.gid_idx).map_err(|e| self.err(e))?;
        Ok((uid, gid))
    }

    fn entry(&self, path: Vec<u8>, inode: &Inode) -> Result<Entry> {
        let kind = EntryKind::from_inode(inode)?;
        let (uid, gid) = self.owner(inode)?;
        let b = inode.base();
        let rdev = matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice)
            .then(|| decode_dev(inode.devno()));
        Ok(Entry {
            path,
            kind,
            mode: b.mode as u32 & 0o7777,
            uid,
            gid,
            mtime: b.mod_time,
            size: if kind == EntryKind::File {
                inode.file_size().map_err(|e| self.err(e))?
            } else if kind == EntryKind::Symlink {
                inode.payload().len() as u64
            } else {
                0
            },
            nlink: inode.nlink(),
            inode: b.inode_number,
            symlink_target: (kind == EntryKind::Symlink).then(|| inode.payload().to_vec()),
            rdev,
        })
    }
}

fn not_found(comps: &[&[u8]]) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{} is not in the image", show_bytes(&comps.join(&b'/'))),
    )
}

fn check_name(name: &[u8]) -> Result<()> {
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
fn split_path(p: &[u8]) -> Result<Vec<&[u8]>> {
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

fn decode_dev(devno: u32) -> (u32, u32) {
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
    let mut stack: Vec<(Vec<u8>, Inode, usize)> = vec![(base, start, 0)];
    while let Some((path, inode, level)) = stack.pop() {
        if EntryKind::from_inode(&inode)? != EntryKind::Dir {
            continue;
        }
        let children = img.read_dir(&inode)?;
        let mut sub = Vec::new();
        for ent in children {
            let child = img.inode(ent.iref)?;
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

// ------------------------------------------------------------------ extraction

struct Extractor<'a> {
    img: Image,
    opts: &'a UnpackOptions,
    progress: &'a Progress,
    dest: PathBuf,
    dest_fd: OwnedFd,
    root: bool,
    /// Hard-linked inodes already extracted: inode number → path under dest.
    links: HashMap<u32, Vec<u8>>,
    /// The directory last used as a hard link source.
    link_dir: Option<(Vec<u8>, OwnedFd)>,
    /// Parent directories created for selected paths (metadata applied last).
    parents: Vec<(OwnedFd, Vec<u8>, Attrs)>,
    buf: Vec<u8>,
    sum: UnpackSummary,
}

/// Metadata to apply to one created entry.
struct Attrs {
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    rdev: (u32, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

const FAKE_STAT: &[u8] = b"user.rsync.%stat";

impl Extractor<'_> {
    fn target(&self, rel: &[u8]) -> PathBuf {
        self.dest.join(OsStr::from_bytes(rel))
    }

    fn fail(&self, verb: &str, rel: &[u8], e: impl Into<io::Error>) -> Error {
        io_err(verb, &self.target(rel), e.into())
    }

    fn attrs(&mut self, inode: &Inode) -> Result<Attrs> {
        let kind = EntryKind::from_inode(inode)?;
        let (uid, gid) = self.img.owner(inode)?;
        let b = inode.base();
        let mut a = Attrs {
            kind,
            mode: b.mode as u32 & 0o7777,
            uid,
            gid,
            mtime: b.mod_time,
            rdev: decode_dev(inode.devno()),
            xattrs: self.img.xattrs_of(inode)?,
        };
        if self.opts.apply_fake_super
            && let Some(pos) = a.xattrs.iter().position(|(k, _)| k == FAKE_STAT)
        {
            let fs = FakeStat::parse(&a.xattrs[pos].1);
            if let Some(fs) = fs {
                self.sum.fake_super_applied += 1;
                a.mode = fs.mode & 0o7777;
                a.uid = fs.uid;
                a.gid = fs.gid;
                // rsync --fake-super keeps devices, fifos and sockets as
                // plain files: give them their type back.
                if kind == EntryKind::File
                    && let Some(k) = fs.special_kind()
                {
                    a.kind = k;
                    a.rdev = (fs.major, fs.minor);
                }
                if !self.opts.keep_fake_super_xattr {
                    a.xattrs.remove(pos);
                }
            }
        }
        Ok(a)
    }

    /// Owner, xattrs, mode, times on an open descriptor (not for symlinks).
    fn finish_fd(&mut self, fd: &OwnedFd, a: &Attrs, rel: &[u8]) -> Result<()> {
        for (k, v) in &a.xattrs {
            match rustix::fs::fsetxattr(fd, k.as_slice(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) if !self.root && !k.starts_with(b"user.") => {
                    self.sum.skipped_xattrs += 1;
                }
                Err(e) => {
                    return Err(self.fail(&format!("setting xattr {} on", show_bytes(k)), rel, e));
                }
            }
        }
        if self.root {
            rustix::fs::fchown(fd, Some(Uid::from_raw(a.uid)), Some(Gid::from_raw(a.gid)))
                .map_err(|e| self.fail("changing owner of", rel, e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(a.mode))
            .map_err(|e| self.fail("changing mode of", rel, e))?;
        rustix::fs::futimens(fd, &times(a.mtime)).map_err(|e| self.fail("setting times of", rel, e))
    }

    /// Owner, xattrs, mode, times by name in `dir` (symlinks and specials).
    fn finish_at(&mut self, dir: &OwnedFd, name: &CStr, a: &Attrs, rel: &[u8]) -> Result<()> {
        if !a.xattrs.is_empty() {
            let p = proc_path(dir, name);
            for (k, v) in &a.xattrs {
                match rustix::fs::lsetxattr(&p, k.as_slice(), v, XattrFlags::empty()) {
                    Ok(()) => {}
                    // Linux refuses user.* xattrs on symlinks and specials.
                    Err(rustix::io::Errno::PERM) if k.starts_with(b"user.") => {}
                    Err(rustix::io::Errno::PERM) if !self.root => self.sum.skipped_xattrs += 1,
                    Err(e) => {
                        return Err(self.fail(
                            &format!("setting xattr {} on", show_bytes(k)),
                            rel,
                            e,
                        ));
                    }
                }
            }
        }
        if self.root {
            rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw(a.uid)),
                Some(Gid::from_raw(a.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fail("changing owner of", rel, e))?;
        }
        if a.kind != EntryKind::Symlink {
            // No fchmodat(AT_SYMLINK_NOFOLLOW) on Linux: it was just created by
            // mknodat in a directory of ours, so it is not a symlink.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(a.mode), AtFlags::empty())
                .map_err(|e| self.fail("changing mode of", rel, e))?;
        }
        rustix::fs::utimensat(dir, name, &times(a.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail("setting times of", rel, e))
    }

    /// The whole content of a small file inode (a symlink target kept as a
    /// file by rsync --fake-super): at most PATH_MAX bytes.
    fn small_file(&mut self, inode: &Inode, rel: &[u8]) -> Result<Vec<u8>> {
        let size = inode.file_size().map_err(|e| self.img.err(e))?;
        if size == 0 || size >= libc::PATH_MAX as u64 {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "image {}: {} is marked as a symlink but holds {size} bytes, not a link target",
                    show(&self.img.path),
                    show_bytes(rel)
                ),
            ));
        }
        let mut out = Vec::with_capacity(size as usize);
        while (out.len() as u64) < size {
            let n = self
                .img
                .data
                .read(inode, out.len() as u64, &mut self.buf)
                .map_err(|e| self.img.err(e))?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    format!(
                        "image {}: data of {} ends early",
                        show(&self.img.path),
                        show_bytes(rel)
                    ),
                ));
            }
            out.extend_from_slice(&self.buf[..n.min(size as usize - out.len())]);
        }
        Ok(out)
    }

    fn mkdir(&self, parent: &OwnedFd, name: &CStr, rel: &[u8]) -> Result<OwnedFd> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
            .map_err(|e| self.fail("creating directory", rel, e))?;
        rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fail("opening directory", rel, e))
    }

    /// Extract the non-directory entry `ent` in `dir`.
    fn leaf(&mut self, dir: &OwnedFd, ent: &DirEnt, rel: &[u8]) -> Result<()> {
        let cname = CString::new(ent.name.as_slice()).expect("checked name");
        let inum = ent.inum;
        // A later link of an inode already extracted: no need to read it.
        if let Some(first) = self.links.get(&inum) {
            let first = first.clone();
            self.hardlink(&first, dir, &cname, rel)?;
            self.sum.hardlinks += 1;
            return Ok(());
        }
        let inode = &self.img.inode(ent.iref)?;
        let a = self.attrs(inode)?;
        match a.kind {
            EntryKind::File => {
                let fd = rustix::fs::openat(
                    dir,
                    cname.as_c_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.fail("creating", rel, e))?;
                let mut f = File::from(fd);
                let size = inode.file_size().map_err(|e| self.img.err(e))?;
                let mut off = 0u64;
                while off < size {
                    let n = self
                        .img
                        .data
                        .read(inode, off, &mut self.buf)
                        .map_err(|e| self.img.err(e))?;
                    if n == 0 {
                        return Err(Error::new(
                            ErrorKind::Integrity,
                            format!(
                                "image {}: data of {} ends early",
                                show(&self.img.path),
                                show_bytes(rel)
                            ),
                        ));
                    }
                    f.write_all(&self.buf[..n])
                        .map_err(|e| self.fail("writing", rel, e))?;
                    off += n as u64;
                    self.progress.add(n as u64);
                }
                self.sum.bytes_out += size;
                self.sum.files += 1;
                let fd = OwnedFd::from(f);
                self.finish_fd(&fd, &a, rel)?;
            }
            EntryKind::Symlink => {
                let stored;
                let target = if EntryKind::from_inode(inode)? == EntryKind::Symlink {
                    inode.payload()
                } else {
                    // rsync --fake-super kept it as a file holding the target.
                    stored = self.small_file(inode, rel)?;
                    &stored[..]
                };
                rustix::fs::symlinkat(OsStr::from_bytes(target), dir, cname.as_c_str())
                    .map_err(|e| self.fail("creating symlink", rel, e))?;
                self.sum.symlinks += 1;
                self.finish_at(dir, &cname, &a, rel)?;
            }
            EntryKind::CharDevice
            | EntryKind::BlockDevice
            | EntryKind::Fifo
            | EntryKind::Socket => {
                let dev = rustix::fs::makedev(a.rdev.0, a.rdev.1);
                let is_dev = matches!(a.kind, EntryKind::CharDevice | EntryKind::BlockDevice);
                match rustix::fs::mknodat(
                    dir,
                    cname.as_c_str(),
                    a.kind.file_type(),
                    Mode::from_raw_mode(0o600),
                    if is_dev { dev } else { 0 },
                ) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::PERM) if is_dev && !self.root => {
                        self.sum.skipped_devices += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(self.fail("creating", rel, e)),
                }
                self.sum.specials += 1;
                self.finish_at(dir, &cname, &a, rel)?;
            }
            EntryKind::Dir => {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    format!(
                        "image {}: directory {} listed with another type",
                        show(&self.img.path),
                        show_bytes(rel)
                    ),
                ));
            }
        }
        if inode.nlink() > 1 {
            self.links.insert(inum, rel.to_vec());
        }
        Ok(())
    }

    /// Link `name` in `dir` to the already extracted `first` (under dest),
    /// resolving `first`'s directory without following any symlink.
    fn hardlink(&mut self, first: &[u8], dir: &OwnedFd, name: &CStr, rel: &[u8]) -> Result<()> {
        let (parent, base) = match first.iter().rposition(|b| *b == b'/') {
            Some(i) => (&first[..i], &first[i + 1..]),
            None => (&b"."[..], first),
        };
        // Links of one directory mostly point into one other directory
        // (the same place in the next snapshot): keep the last one open.
        let cached = matches!(&self.link_dir, Some((p, _)) if p.as_slice() == parent);
        if !cached {
            let pfd = rustix::fs::openat2(
                &self.dest_fd,
                OsStr::from_bytes(parent),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|e| self.fail("opening the directory of a hard link target for", rel, e))?;
            self.link_dir = Some((parent.to_vec(), pfd));
        }
        let pfd = &self.link_dir.as_ref().expect("cached directory").1;
        rustix::fs::linkat(pfd, OsStr::from_bytes(base), dir, name, AtFlags::empty())
            .map_err(|e| self.fail("creating hard link", rel, e))
    }

    /// Extract the tree below directory `inode` into `fd` (whose path under
    /// dest is `rel`), then apply the directories' metadata, deepest first.
    fn tree(&mut self, fd: OwnedFd, rel: Vec<u8>, inode: Inode, set_attrs: bool) -> Result<()> {
        struct Open {
            fd: OwnedFd,
            rel: Vec<u8>,
            attrs: Option<Attrs>,
            children: std::vec::IntoIter<DirEnt>,
        }
        let attrs = if set_attrs {
            Some(self.attrs(&inode)?)
        } else {
            None
        };
        let children = self.img.read_dir(&inode)?.into_iter();
        let mut stack = vec![Open {
            fd,
            rel,
            attrs,
            children,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(ent) = top.children.next() else {
                let done = stack.pop().expect("open dir");
                if let Some(a) = &done.attrs {
                    self.finish_fd(&done.fd, a, &done.rel)?;
                }
                continue;
            };
            let mut rel = top.rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&ent.name);
            if ent.type_ == sys::SQFS_INODE_DIR {
                let child = self.img.inode(ent.iref)?;
                if EntryKind::from_inode(&child)? != EntryKind::Dir {
                    return Err(Error::new(
                        ErrorKind::Integrity,
                        format!(
                            "image {}: {} is not a directory",
                            show(&self.img.path),
                            show_bytes(&rel)
                        ),
                    ));
                }
                let cname = CString::new(ent.name).expect("checked name");
                let fd = self.mkdir(&top.fd, &cname, &rel)?;
                self.sum.dirs += 1;
                let attrs = Some(self.attrs(&child)?);
                let children = self.img.read_dir(&child)?.into_iter();
                stack.push(Open {
                    fd,
                    rel,
                    attrs,
                    children,
                });
            } else {
                self.leaf(&top.fd, &ent, &rel)?;
            }
        }
        Ok(())
    }
}

fn times(mtime: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// `/proc/self/fd/N/name`: a path for the few calls that have no `*at` form
/// (lsetxattr). Only the final component is looked up, without following it.
fn proc_path(dir: &OwnedFd, name: &CStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    p.push(OsStr::from_bytes(name.to_bytes()));
    p
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
    let mut img = Image::open(image)?;
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
            std::fs::create_dir_all(dest).map_err(|e| io_err("creating", dest, e))?;
        }
        Err(e) => return Err(io_err("checking", dest, e)),
    }
    let dest_fd = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("opening", dest, e.into()))?;
    let block = img.sup.block_size as usize;
    let mut x = Extractor {
        img,
        opts,
        progress,
        dest: dest.to_path_buf(),
        dest_fd,
        root: rustix::process::geteuid().is_root(),
        links: HashMap::new(),
        link_dir: None,
        parents: Vec::new(),
        buf: vec![0u8; block],
        sum: UnpackSummary::default(),
    };
    if selects.is_empty() {
        let root = x.img.root()?;
        let fd = x
            .dest_fd
            .try_clone()
            .map_err(|e| io_err("duplicating", dest, e))?;
        x.tree(fd, Vec::new(), root, false)?;
    } else {
        let mut done: Vec<Vec<&[u8]>> = Vec::new();
        for comps in &selects {
            // Skip a path already covered by an earlier selection.
            if done.iter().any(|d| comps.starts_with(d)) {
                continue;
            }
            x.select(comps)?;
            done.push(comps.clone());
        }
        // Parents created for the selections get their metadata last, deepest first.
        let parents = std::mem::take(&mut x.parents);
        for (pfd, prel, a) in parents.iter().rev() {
            x.finish_fd(pfd, a, prel)?;
        }
    }
    progress.finish();
    x.sum.duration = start.elapsed();
    Ok(x.sum)
}

impl Extractor<'_> {
    /// Extract one selected path, creating its parents (with their image
    /// metadata) as needed.
    fn select(&mut self, comps: &[&[u8]]) -> Result<()> {
        let mut cur = self.img.root()?;
        let mut fd = self
            .dest_fd
            .try_clone()
            .map_err(|e| io_err("duplicating", &self.dest, e))?;
        let mut rel: Vec<u8> = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            let entries = self.img.read_dir(&cur)?;
            let ent = entries
                .into_iter()
                .find(|e| e.name == *c)
                .ok_or_else(|| not_found(&comps[..=i]))?;
            let inode = self.img.inode(ent.iref)?;
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(c);
            let last = i + 1 == comps.len();
            let cname = CString::new(*c).expect("checked name");
            if EntryKind::from_inode(&inode)? != EntryKind::Dir {
                if !last {
                    return Err(not_found(&comps[..=i + 1]));
                }
                self.leaf(&fd, &ent, &rel)?;
                break;
            }
            // An earlier selection may have created this directory already.
            let sub = match rustix::fs::openat(
                &fd,
                cname.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(sub) => {
                    if last {
                        return Err(Error::invalid_input(format!(
                            "selected paths overlap at {}",
                            show_bytes(&rel)
                        )));
                    }
                    sub
                }
                Err(rustix::io::Errno::NOENT) => {
                    let sub = self.mkdir(&fd, &cname, &rel)?;
                    self.sum.dirs += 1;
                    if !last {
                        let a = self.attrs(&inode)?;
                        self.parents.push((
                            sub.try_clone()
                                .map_err(|e| self.fail("duplicating", &rel, e))?,
                            rel.clone(),
                            a,
                        ));
                    }
                    sub
                }
                Err(e) => return Err(self.fail("opening", &rel, e)),
            };
            if last {
                self.tree(sub, rel.clone(), inode, true)?;
                break;
            }
            fd = sub;
            cur = inode;
        }
        Ok(())
    }
}
