#![forbid(unsafe_code)]
//! The data pass: the walk that writes data, inodes and directories.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use snap_core::{Error, ErrorKind, Progress, Result};

use super::files::{FileKey, Live, Reuse};
use super::links::Links;
use super::source::Source;
use super::xattrs::{XSrc, read_xattrs};
use super::{PackOptions, PackSummary};
use crate::ffi::{
    self, BlockProcessor, Compressor as SqCompressor, DirWriter, FragTable, IdTable, Inode,
    MetaWriter, SqFile, XattrWriter,
};
use crate::sys;
use crate::util::{io_err, show, sq_err};
use crate::walk::{self, St};

// ------------------------------------------------------------------ data pass

/// Where an entry's inode is: written (number and reference) or waiting in
/// the pending queue (index into `Packer::slots`).
#[derive(Clone, Copy)]
pub(super) enum Target {
    Known { inum: u32, iref: u64 },
    Slot(u32),
}

pub(super) struct Entry {
    pub(super) name: CString,
    pub(super) mode: u16,
    pub(super) target: Target,
}

#[derive(Clone, Copy)]
pub(super) struct Meta {
    pub(super) mode: u16,
    pub(super) uid_idx: u16,
    pub(super) gid_idx: u16,
    pub(super) mtime: u32,
    pub(super) xattr: u32,
}

pub(super) enum Slot {
    /// A file whose data is still being compressed (its inode is the next
    /// one the block processor hands back).
    File {
        inum: u32,
        meta: Meta,
        nlink: u32,
        link_key: Option<(u64, u64)>,
        /// Identity for the chain index, when the pack keeps one.
        key: Option<Box<FileKey>>,
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

pub(super) struct Frame {
    pub(super) dir: File,
    pub(super) name: CString,
    pub(super) names: std::vec::IntoIter<walk::Ent>,
    /// Device of this directory (for hard links recognised by listing).
    pub(super) dev: u64,
    pub(super) depth: usize,
    pub(super) inum: u32,
    pub(super) parent: u32,
    pub(super) meta: Meta,
    pub(super) subdirs: u32,
    pub(super) entries: Vec<Entry>,
}

/// The owner of files outside every server's directory.
pub(super) const NO_OWNER: u32 = u32::MAX;

/// Data blocks in flight per compression thread (each up to one block in size).
pub(super) const BACKLOG_PER_THREAD: u32 = 16;

pub(super) struct Packer<'a> {
    pub(super) opts: &'a PackOptions,
    pub(super) progress: &'a Progress,
    pub(super) image_path: &'a Path,
    pub(super) image: Rc<SqFile>,
    pub(super) itab: Rc<SqFile>,
    pub(super) dtab: Rc<SqFile>,
    pub(super) cmp: Rc<SqCompressor>,
    // Drop order matters: the processor (and its worker threads) first.
    pub(super) bp: BlockProcessor,
    pub(super) im: MetaWriter,
    pub(super) dw: DirWriter,
    pub(super) ids: IdTable,
    pub(super) xw: XattrWriter,
    pub(super) frag: Rc<FragTable>,
    pub(super) slots: Vec<Slot>,
    pub(super) pending_entries: usize,
    pub(super) links: Links,
    pub(super) next_inum: u32,
    pub(super) buf: Vec<u8>,
    pub(super) sum: PackSummary,
    pub(super) block_size: u32,
    /// File inodes the block processor completed before their slots were
    /// written (a sparse file waits for all data before its own).
    pub(super) synced: Vec<Inode>,
    /// Chain links: the index of files already in the image, and the new one.
    pub(super) reuse: Option<&'a mut dyn Reuse>,
    /// Index of the server (depth-2 name) being walked, for file keys.
    pub(super) owner: u32,
    /// Chain links: which data the image still uses.
    pub(super) live: Option<Live>,
    /// Directory listings give inode numbers (the pre-pass counted links
    /// from them, and the walk recognises further links by them).
    pub(super) listing_inodes: bool,
}

pub(super) fn clamp_mtime(st: &St, sum: &mut PackSummary) -> u32 {
    let t = st.mtime;
    if t < 0 || t > u32::MAX as i64 {
        sum.clamped_mtimes += 1;
        t.clamp(0, u32::MAX as i64) as u32
    } else {
        t as u32
    }
}

/// Linux "new" device number encoding, as the kernel's squashfs expects.
pub(super) fn encode_dev(rdev: u64) -> u32 {
    let major = libc::major(rdev) as u32;
    let minor = libc::minor(rdev) as u32;
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

impl<'a> Packer<'a> {
    pub(super) fn sq(&self, e: ffi::SqfsError) -> Error {
        sq_err(
            e,
            &[
                (&self.image, self.image_path),
                (&self.itab, self.image_path),
                (&self.dtab, self.image_path),
            ],
        )
    }

    pub(super) fn changed(&self, path: &Path, what: &str) -> Error {
        Error::new(
            ErrorKind::Io,
            format!("{} changed during pack ({what}); try again", show(path)),
        )
    }

    pub(super) fn meta_of(&mut self, xsrc: XSrc<'_>, path: &Path, meta: &St) -> Result<Meta> {
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

    pub(super) fn new_inum(&mut self) -> Result<u32> {
        let n = self.next_inum;
        self.next_inum = n
            .checked_add(1)
            .ok_or_else(|| Error::invalid_input("more than 2^32 inodes"))?;
        self.sum.inodes += 1;
        Ok(n)
    }

    pub(super) fn apply(
        &self,
        inode: &mut Inode,
        inum: u32,
        meta: &Meta,
        nlink: u32,
    ) -> Result<()> {
        let b = inode.base_mut();
        b.mode = meta.mode;
        b.uid_idx = meta.uid_idx;
        b.gid_idx = meta.gid_idx;
        b.mod_time = meta.mtime;
        b.inode_number = inum;
        inode.set_nlink(nlink).map_err(|e| self.sq(e))?;
        inode.set_xattr_index(meta.xattr).map_err(|e| self.sq(e))
    }

    pub(super) fn write_inode(&mut self, inode: &Inode) -> Result<u64> {
        match self.im.write_inode(inode) {
            Ok(r) => Ok(r),
            Err(e) => Err(self.sq(e)),
        }
    }

    /// A further link of an inode already written or queued: its target and
    /// file type (the link is counted as seen).
    pub(super) fn seen_link(&mut self, key: (u64, u64)) -> Option<(Target, u16)> {
        let link = self.links.get_mut(key)?;
        if link.inum == 0 {
            return None;
        }
        link.remaining -= 1;
        let t = (link.target(), link.fmt());
        if link.remaining == 0 {
            self.links.remove(key);
        }
        self.sum.hardlinks += 1;
        Some(t)
    }

    /// Handle one non-directory entry; returns its target.
    pub(super) fn add_leaf(
        &mut self,
        dir: &File,
        name: &CStr,
        path: &Path,
        meta: &St,
    ) -> Result<Target> {
        let key = (meta.dev, meta.ino);
        let mut nlink = 1;
        if !meta.linked() && self.listing_inodes {
            // Counted from listings like every other inode: seen now.
            self.links.remove(key);
        }
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
            self.add_regular(dir, name, path, meta, inum, nlink)?
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
            link.set_fmt(meta.fmt());
            link.remaining -= 1;
            if link.remaining == 0 {
                self.links.remove(key);
            }
        }
        Ok(target)
    }

    /// Write a finished directory whose entries are all known.
    pub(super) fn write_dir(
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
    pub(super) fn close_dir(&mut self, f: Frame) -> Result<Target> {
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

    pub(super) fn should_flush(&self) -> bool {
        let max = self.opts.max_pending.max(1);
        self.slots.len() >= max || self.pending_entries >= max.saturating_mul(8)
    }

    /// Wait for the data of all queued files, then write every queued inode
    /// and directory, and resolve the entries of the open directories.
    pub(super) fn flush(&mut self, stack: &mut [Frame], finish: bool) -> Result<Vec<Target>> {
        let inodes = if finish {
            self.bp.finish()
        } else {
            self.bp.sync()
        }
        .map_err(|e| self.sq(e))?;
        let mut inodes = std::mem::take(&mut self.synced).into_iter().chain(inodes);
        let slots = std::mem::take(&mut self.slots);
        let mut resolved: Vec<Target> = Vec::with_capacity(slots.len());
        for slot in slots {
            let t = match slot {
                Slot::File {
                    inum,
                    meta,
                    nlink,
                    link_key,
                    key,
                } => {
                    let inode = inodes
                        .next()
                        .ok_or_else(|| Error::internal("pack: fewer file inodes than slots"))?;
                    let layout =
                        crate::layout::FileLayout::from_inode(&inode).map_err(|e| self.sq(e))?;
                    if let (Some(key), Some(reuse)) = (key, self.reuse.as_mut()) {
                        reuse.record(&key, &layout, false)?;
                    }
                    let t = Target::Known {
                        inum,
                        iref: self.write_file(&layout, inum, &meta, nlink)?,
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_frame(
        &mut self,
        source: &Source<'_>,
        dir: File,
        path: &Path,
        name: CString,
        meta: &St,
        depth: usize,
        parent: Option<u32>,
    ) -> Result<Frame> {
        let inum = self.new_inum()?;
        self.sum.dirs += 1;
        let mut m = self.meta_of(XSrc::Fd(&dir), path, meta)?;
        let names = if parent.is_none() {
            if let Some(t) = source.root_mtime {
                m.mtime = t.clamp(0, u32::MAX as i64) as u32;
            }
            source.root_names(&dir)
        } else {
            walk::entries(&dir)
        }
        .map_err(|e| io_err("listing", path, e))?;
        Ok(Frame {
            dir,
            name,
            names: names.into_iter(),
            dev: meta.dev,
            depth,
            inum,
            parent: parent.unwrap_or(0),
            meta: m,
            subdirs: 0,
            entries: Vec::new(),
        })
    }

    /// The walk. Returns the root's reference.
    pub(super) fn run(&mut self, source: &Source<'_>) -> Result<u64> {
        let sel = self.opts.selection.clone();
        let mut path = source.root.to_path_buf();
        let meta = walk::stat_path(&path).map_err(|e| io_err("reading", &path, e))?;
        let dir = walk::open_dir_path(&path).map_err(|e| io_err("opening", &path, e))?;
        let root = self.open_frame(source, dir, &path, CString::default(), &meta, 1, None)?;
        let mut stack = vec![root];
        let root_target = loop {
            let top = stack.last_mut().expect("stack");
            let Some(ent) = top.names.next() else {
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
            let name = ent.name;
            if source.skip(sel.as_ref(), depth, &name) {
                continue;
            }
            // A further link of an inode already written, known from the
            // listing alone: no stat, no open.
            if self.listing_inodes
                && ent.kind == walk::Kind::Other
                && let Some((target, fmt)) = self.seen_link((top.dev, ent.ino))
            {
                top.entries.push(Entry {
                    name,
                    mode: fmt,
                    target,
                });
                if self.should_flush() {
                    self.flush(&mut stack, false)?;
                }
                continue;
            }
            let real = source.real(depth, &name);
            path.push(OsStr::from_bytes(real.to_bytes()));
            let meta = walk::stat_at(&top.dir, real).map_err(|e| io_err("reading", &path, e))?;
            if meta.is_dir() {
                let dir =
                    walk::open_dir_at(&top.dir, real).map_err(|e| io_err("opening", &path, e))?;
                if depth == 2
                    && let Some(r) = self.reuse.as_mut()
                {
                    self.owner = r.owner(name.to_bytes());
                }
                let f = self.open_frame(
                    source,
                    dir,
                    &path,
                    name,
                    &meta,
                    depth + 1,
                    Some(parent_inum),
                )?;
                stack.push(f);
                continue;
            }
            if depth == 1 && source.snapshots.is_some() {
                return Err(self.changed(&path, "a snapshot is no longer a directory"));
            }
            if depth == 2 {
                // A file beside the servers belongs to none: never reused.
                self.owner = NO_OWNER;
            }
            let target = self.add_leaf(&top.dir, real, &path, &meta)?;
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
