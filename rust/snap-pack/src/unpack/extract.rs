#![forbid(unsafe_code)]
//! Extraction into a destination directory, by descriptors only.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc::SyncSender;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use snap_core::{Error, ErrorKind, Progress, Result};

use super::apply::{Apply, Attrs};
use super::image::{Image, Node};
use super::later::{Aside, Later, identity};
use super::writer::{Job, QUEUED_XATTRS_MAX, write_data};
use super::{EntryKind, UnpackOptions, UnpackSummary, decode_dev, not_found};
use crate::fakesuper::FakeStat;
use crate::ffi::{DirEnt, Inode};
use crate::sys;
use crate::util::{io_err, show, show_bytes};

// ------------------------------------------------------------------ extraction

pub(super) struct Extractor<'a> {
    pub(super) img: Image,
    pub(super) opts: &'a UnpackOptions,
    pub(super) progress: &'a Progress,
    pub(super) dest_fd: OwnedFd,
    /// Applies metadata under the destination (and names paths in messages).
    pub(super) apply: Apply,
    /// Hard-linked inodes already extracted: inode number → path under dest.
    pub(super) links: HashMap<u32, Vec<u8>>,
    /// Where regular files go to have their data written (the writers),
    /// or `None` to write them here.
    pub(super) data: Option<SyncSender<Job>>,
    /// The directories last used as hard link sources, most recent first
    /// (at most [`LINK_DIRS`]).
    pub(super) link_dirs: Vec<(Vec<u8>, OwnedFd)>,
    /// Parent directories created for selected paths (metadata applied last).
    pub(super) parents: Vec<(OwnedFd, Vec<u8>, Attrs)>,
    /// Files set aside to be written by fragment block.
    pub(super) later: Later,
    pub(super) sum: UnpackSummary,
}

const FAKE_STAT: &[u8] = b"user.rsync.%stat";

/// Hard link source directories kept open. The links of one directory
/// point into the same directory of the snapshots its files first came in:
/// with churn that is several, taken in turn. Keeping only the last one,
/// a 14-link chain's image opened a directory for 50,374 of its 72,905
/// links.
pub(super) const LINK_DIRS: usize = 16;

impl Extractor<'_> {
    pub(super) fn fail(&self, verb: &str, rel: &[u8], e: impl Into<io::Error>) -> Error {
        self.apply.fail(verb, rel, e)
    }

    pub(super) fn attrs(&mut self, node: &Node) -> Result<Attrs> {
        let kind = node.kind()?;
        let (uid, gid) = self.img.owner(node)?;
        let (mode, _, _, mtime, _) = node.head();
        let mut a = Attrs {
            kind,
            mode,
            uid,
            gid,
            mtime,
            rdev: decode_dev(node.devno()),
            xattrs: self.img.xattrs_of(node)?,
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

    /// The whole content of a small file (a symlink target kept as a file
    /// by rsync --fake-super): at most PATH_MAX bytes.
    pub(super) fn small_file(&mut self, iref: u64, size: u64, rel: &[u8]) -> Result<Vec<u8>> {
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
        let mut out = vec![0u8; size as usize];
        self.img.file_data(iref, rel, &mut |off, data| {
            out[off as usize..off as usize + data.len()].copy_from_slice(data);
            Ok(())
        })?;
        Ok(out)
    }

    pub(super) fn mkdir(&self, parent: &OwnedFd, name: &CStr, rel: &[u8]) -> Result<OwnedFd> {
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
    pub(super) fn leaf(&mut self, dir: &OwnedFd, ent: &DirEnt, rel: &[u8]) -> Result<()> {
        let cname = CString::new(ent.name.as_slice()).expect("checked name");
        let inum = ent.inum;
        // A later link of an inode already extracted: no need to read it.
        if let Some(first) = self.links.get(&inum) {
            let first = first.clone();
            self.hardlink(&first, dir, &cname, rel)?;
            self.sum.hardlinks += 1;
            return Ok(());
        }
        let node = &self.img.node(ent.iref)?;
        let a = self.attrs(node)?;
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
                let f = File::from(fd);
                let Node::File(head) = node else {
                    return Err(Error::internal("unpack: a file without a file inode"));
                };
                let size = head.size;
                let fragment = match head.frag {
                    Some((idx, _)) => Some(self.img.fragment(idx)?),
                    None => None,
                };
                self.sum.bytes_out += size;
                self.sum.files += 1;
                let xattr_bytes = a.weight();
                // Its block read before and let go: written later, with
                // the other files of its block (see later.rs).
                if let Some(block) = fragment
                    && self.data.is_some()
                    && self.later.waits(block, &self.img.frags_cached)
                {
                    let id = identity(&f).map_err(|e| self.fail("checking", rel, e))?;
                    drop(f);
                    self.later.push(Aside {
                        block,
                        iref: ent.iref,
                        size,
                        rel: rel.to_vec(),
                        attrs: a,
                        id,
                    });
                    if node.nlink() > 1 {
                        self.links.insert(inum, rel.to_vec());
                    }
                    if self.later.is_full() {
                        self.write_later()?;
                    }
                    return Ok(());
                }
                match &self.data {
                    // Its data and metadata on a writer's thread (see writer.rs).
                    Some(tx) if xattr_bytes <= QUEUED_XATTRS_MAX => {
                        let job = Job {
                            file: f,
                            iref: ent.iref,
                            size,
                            fragment,
                            rel: rel.to_vec(),
                            attrs: a,
                        };
                        if tx.send(job).is_err() {
                            return Err(Error::internal(
                                "unpack: a data writer stopped (its error follows)",
                            ));
                        }
                    }
                    _ => {
                        write_data(
                            &mut self.img,
                            self.progress,
                            &self.apply,
                            &f,
                            (ent.iref, fragment),
                            size,
                            rel,
                        )?;
                        self.apply.finish_fd(&OwnedFd::from(f), &a, rel)?;
                    }
                }
            }
            EntryKind::Symlink => {
                let stored;
                let target = match node {
                    Node::Other(inode) => inode.payload(),
                    Node::File(head) => {
                        // rsync --fake-super kept it as a file holding the target.
                        stored = self.small_file(ent.iref, head.size, rel)?;
                        &stored[..]
                    }
                };
                rustix::fs::symlinkat(OsStr::from_bytes(target), dir, cname.as_c_str())
                    .map_err(|e| self.fail("creating symlink", rel, e))?;
                self.sum.symlinks += 1;
                self.apply.finish_at(dir, &cname, &a, rel)?;
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
                    Err(rustix::io::Errno::PERM) if is_dev && !self.apply.root => {
                        self.sum.skipped_devices += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(self.fail("creating", rel, e)),
                }
                self.sum.specials += 1;
                self.apply.finish_at(dir, &cname, &a, rel)?;
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
        if node.nlink() > 1 {
            self.links.insert(inum, rel.to_vec());
        }
        Ok(())
    }

    /// Link `name` in `dir` to the already extracted `first` (under dest),
    /// resolving `first`'s directory without following any symlink.
    pub(super) fn hardlink(
        &mut self,
        first: &[u8],
        dir: &OwnedFd,
        name: &CStr,
        rel: &[u8],
    ) -> Result<()> {
        let (parent, base) = match first.iter().rposition(|b| *b == b'/') {
            Some(i) => (&first[..i], &first[i + 1..]),
            None => (&b"."[..], first),
        };
        match self
            .link_dirs
            .iter()
            .position(|(p, _)| p.as_slice() == parent)
        {
            Some(i) => self.link_dirs[..=i].rotate_right(1),
            None => {
                let open = |x: &Self| {
                    rustix::fs::openat2(
                        &x.dest_fd,
                        OsStr::from_bytes(parent),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                        ResolveFlags::BENEATH
                            | ResolveFlags::NO_SYMLINKS
                            | ResolveFlags::NO_MAGICLINKS,
                    )
                };
                let pfd = match open(self) {
                    // Out of descriptors: the ones kept here go first (a
                    // low `ulimit -n` worked with one kept before).
                    Err(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE) => {
                        self.link_dirs.clear();
                        open(self)
                    }
                    other => other,
                }
                .map_err(|e| {
                    self.fail("opening the directory of a hard link target for", rel, e)
                })?;
                self.link_dirs.truncate(LINK_DIRS - 1);
                self.link_dirs.insert(0, (parent.to_vec(), pfd));
            }
        }
        let pfd = &self.link_dirs[0].1;
        rustix::fs::linkat(pfd, OsStr::from_bytes(base), dir, name, AtFlags::empty())
            .map_err(|e| self.fail("creating hard link", rel, e))
    }

    /// Extract the tree below directory `inode` into `fd` (whose path under
    /// dest is `rel`), then apply the directories' metadata, deepest first.
    pub(super) fn tree(
        &mut self,
        fd: OwnedFd,
        rel: Vec<u8>,
        inode: Inode,
        set_attrs: bool,
    ) -> Result<()> {
        struct Open {
            fd: OwnedFd,
            rel: Vec<u8>,
            attrs: Option<Attrs>,
            children: std::vec::IntoIter<DirEnt>,
            /// A file below was set aside (later.rs).
            aside: bool,
        }
        let node = Node::Other(inode);
        let attrs = if set_attrs {
            Some(self.attrs(&node)?)
        } else {
            None
        };
        let Node::Other(inode) = node else {
            unreachable!("built above")
        };
        let children = self.img.read_dir(&inode)?.into_iter();
        // A directory is listed once in an image: one listed again (a
        // directory naming an ancestor) would make a tree as deep as the
        // descriptors allow, which cleaning up cannot even remove.
        let mut dirs_seen: HashSet<u64> = HashSet::new();
        let mut stack = vec![Open {
            fd,
            rel,
            attrs,
            children,
            aside: false,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(ent) = top.children.next() else {
                let done = stack.pop().expect("open dir");
                if done.aside
                    && let Some(up) = stack.last_mut()
                {
                    up.aside = true;
                }
                match done.attrs {
                    // Files set aside below pass through it when they are
                    // opened again: its mode may shut them out.
                    Some(a) if done.aside => {
                        let id =
                            identity(&done.fd).map_err(|e| self.fail("checking", &done.rel, e))?;
                        self.later.push_dir(done.rel, a, id);
                        if self.later.is_full() {
                            self.write_later()?;
                        }
                    }
                    Some(a) => self.apply.finish_fd(&done.fd, &a, &done.rel)?,
                    None => {}
                }
                continue;
            };
            let mut rel = top.rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&ent.name);
            if ent.type_ == sys::SQFS_INODE_DIR {
                if !dirs_seen.insert(ent.iref) {
                    return Err(Error::new(
                        ErrorKind::Integrity,
                        format!(
                            "image {}: {} lists a directory listed already (a loop)",
                            show(&self.img.path),
                            show_bytes(&rel)
                        ),
                    ));
                }
                let child = Node::Other(self.img.inode(ent.iref)?);
                if child.dir().is_none() {
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
                let children = self
                    .img
                    .read_dir(child.dir().expect("checked"))?
                    .into_iter();
                stack.push(Open {
                    fd,
                    rel,
                    attrs,
                    children,
                    aside: false,
                });
            } else {
                let before = self.later.count;
                self.leaf(&top.fd, &ent, &rel)?;
                top.aside |= self.later.count != before;
            }
        }
        Ok(())
    }
}

impl Extractor<'_> {
    /// Extract one selected path, creating its parents (with their image
    /// metadata) as needed.
    pub(super) fn select(&mut self, comps: &[&[u8]]) -> Result<()> {
        let mut cur = self.img.root()?;
        let mut fd = self
            .dest_fd
            .try_clone()
            .map_err(|e| io_err("duplicating", &self.apply.dest, e))?;
        let mut rel: Vec<u8> = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            let entries = self.img.read_dir(&cur)?;
            let ent = entries
                .into_iter()
                .find(|e| e.name == *c)
                .ok_or_else(|| not_found(&comps[..=i]))?;
            let node = self.img.node(ent.iref)?;
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(c);
            let last = i + 1 == comps.len();
            let cname = CString::new(*c).expect("checked name");
            if node.dir().is_none() {
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
                        let a = self.attrs(&node)?;
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
            let Node::Other(inode) = node else {
                unreachable!("a directory")
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
