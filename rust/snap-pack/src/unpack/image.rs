#![forbid(unsafe_code)]
//! An open image: metadata tables, data, xattrs, ids.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use snap_core::{Error, ErrorKind, Result};

use super::{Entry, EntryKind, check_name, decode_dev, not_found};
use crate::ffi::{
    self, Compressor, DirEnt, FragTable, IdTable, Inode, MetaTables, SqFile, XattrReader,
};
use crate::layout::FileHead;
use crate::sys;
use crate::util::{io_err, show, sq_err};

/// An inode as unpack reads it: a regular file by its header alone (its
/// block list is streamed when its data is read), anything else whole.
pub(crate) enum Node {
    File(FileHead),
    Other(Inode),
}

impl Node {
    pub(crate) fn kind(&self) -> Result<EntryKind> {
        match self {
            Node::File(_) => Ok(EntryKind::File),
            Node::Other(i) => EntryKind::from_inode(i),
        }
    }

    /// `(mode bits, uid index, gid index, mtime, inode number)`.
    pub(crate) fn head(&self) -> (u32, u16, u16, u32, u32) {
        match self {
            Node::File(f) => {
                let h = &f.head;
                (
                    h.mode as u32 & 0o7777,
                    h.uid_idx,
                    h.gid_idx,
                    h.mtime,
                    h.inum,
                )
            }
            Node::Other(i) => {
                let b = i.base();
                (
                    b.mode as u32 & 0o7777,
                    b.uid_idx,
                    b.gid_idx,
                    b.mod_time,
                    b.inode_number,
                )
            }
        }
    }

    pub(crate) fn xattr_index(&self) -> u32 {
        match self {
            Node::File(f) => f.xattr,
            Node::Other(i) => i.xattr_index(),
        }
    }

    pub(crate) fn nlink(&self) -> u32 {
        match self {
            Node::File(f) => f.nlink,
            Node::Other(i) => i.nlink(),
        }
    }

    pub(crate) fn devno(&self) -> u32 {
        match self {
            Node::File(_) => 0,
            Node::Other(i) => i.devno(),
        }
    }

    /// The directory inode (for listing), if it is one.
    pub(crate) fn dir(&self) -> Option<&Inode> {
        match self {
            Node::Other(i) if EntryKind::from_inode(i).ok() == Some(EntryKind::Dir) => Some(i),
            _ => None,
        }
    }
}

/// Bytes of the super block, before anything else in an image.
const SUPER_BLOCK: u64 = 96;

/// An open image.
pub(crate) struct Image {
    pub(super) path: PathBuf,
    pub(super) file: Rc<SqFile>,
    pub(crate) sup: Rc<ffi::Super>,
    pub(super) meta: MetaTables,
    pub(super) cmp: Rc<Compressor>,
    pub(super) frags: FragTable,
    /// The fragment blocks read last.
    pub(super) frags_cached: super::frags::SharedFrags,
    /// A block as stored, and decompressed.
    pub(super) raw: Vec<u8>,
    pub(super) block: Vec<u8>,
    pub(super) xattrs: Option<XattrReader>,
    pub(super) ids: IdTable,
}

impl Image {
    pub(super) fn open(path: &Path) -> Result<Image> {
        Image::open_present(path, None)
    }

    /// The image at `path`, of which only `present` may be read (all of it
    /// when `None`).
    pub(super) fn open_present(
        path: &Path,
        present: Option<std::sync::Arc<ffi::Present>>,
    ) -> Result<Image> {
        let f = File::open(path).map_err(|e| io_err("opening image", path, e))?;
        let len = f.metadata().map_err(|e| io_err("reading", path, e))?.len();
        Image::open_file(Rc::new(SqFile::with_present(f, len, present)), path)
    }

    /// An image read through `file` (which may hold only its tail, with the
    /// super block in memory); `path` names it in messages.
    pub(crate) fn open_file(file: Rc<SqFile>, path: &Path) -> Result<Image> {
        Image::open_with(file, path, true)
    }

    /// An image reader for file data only (unpack's writers): the
    /// fragment, id and xattr tables are not read (the extractor resolves
    /// owners, xattrs and each file's fragment block), so a writer costs
    /// no copy of tables a hostile image sizes.
    /// Fragment blocks come from (and go to) `frags`, the extractor's cache.
    pub(super) fn open_data(
        file: Rc<SqFile>,
        path: &Path,
        frags: super::frags::SharedFrags,
    ) -> Result<Image> {
        let mut img = Image::open_with(file, path, false)?;
        img.frags_cached = frags;
        Ok(img)
    }

    fn open_with(file: Rc<SqFile>, path: &Path, tables: bool) -> Result<Image> {
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
        if sup.bytes_used > file.size() {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "image {} is truncated: {} bytes, its super block says {} \
                     (a piece missing or cut short?)",
                    show(path),
                    file.size(),
                    sup.bytes_used
                ),
            ));
        }
        // A tail lacks the options block after the super block; reading
        // needs no options (they tune compression).
        if sup.flags & sys::SQFS_FLAG_COMPRESSOR_OPTIONS as u16 != 0 && file.base() == 0 {
            cmp.read_options(&file).map_err(err)?;
        }
        let meta = MetaTables::new(sup.clone(), cmp.clone(), file.clone()).map_err(err)?;
        // libsquashfs allocates 16 bytes per fragment the super block
        // counts, whatever the table's index points at (one 8 KiB block
        // listed again and again made 8 bytes of image cost 8 KiB). Every
        // fragment block takes at least a byte between the super block and
        // the inode table: a count that room cannot hold is forged.
        let room = sup.inode_table_start.saturating_sub(SUPER_BLOCK);
        if u64::from(sup.fragment_entry_count) > room {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "image {}: its super block counts {} fragment blocks, more than the {room} \
                     bytes of data can hold",
                    show(path),
                    sup.fragment_entry_count
                ),
            ));
        }
        let frags = if tables {
            FragTable::read(&file, &sup, &cmp).map_err(err)?
        } else {
            FragTable::new().map_err(err)?
        };
        let bs = sup.block_size as usize;
        let xattrs = if tables
            && sup.flags & sys::SQFS_FLAG_NO_XATTRS as u16 == 0
            && sup.xattr_id_table_start != u64::MAX
        {
            Some(XattrReader::new(&sup, cmp.clone(), file.clone()).map_err(err)?)
        } else {
            None
        };
        let ids = if tables {
            IdTable::read(&file, &sup, &cmp).map_err(err)?
        } else {
            IdTable::new().map_err(err)?
        };
        Ok(Image {
            path: path.to_path_buf(),
            file,
            sup,
            meta,
            cmp,
            frags,
            frags_cached: Default::default(),
            raw: vec![0; bs],
            block: vec![0; bs],
            xattrs,
            ids,
        })
    }

    pub(super) fn err(&self, e: ffi::SqfsError) -> Error {
        if let Some(io) = self.file.take_error() {
            return io_err("reading image", &self.path, io).context(e.describe());
        }
        sq_err(e, &[]).context(format!("image {}", show(&self.path)))
    }

    /// Entries of a directory inode, in stored order (inodes not read).
    pub(crate) fn read_dir(&mut self, dir: &Inode) -> Result<Vec<DirEnt>> {
        let entries = match self.meta.read_dir(dir) {
            Ok(e) => e,
            Err(e) => return Err(self.err(e)),
        };
        for e in &entries {
            check_name(&e.name)?;
        }
        Ok(entries)
    }

    pub(super) fn inode(&mut self, iref: u64) -> Result<Inode> {
        match self.meta.inode(iref) {
            Ok(i) => Ok(i),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The inode at `iref`; a regular file's block list is not read.
    pub(crate) fn node(&mut self, iref: u64) -> Result<Node> {
        let mut ty = [0u8; 2];
        let peek = self
            .meta
            .seek_inode(iref)
            .and_then(|()| self.meta.read_inode_bytes(&mut ty));
        if let Err(e) = peek {
            return Err(self.err(e));
        }
        let ty = u16::from_le_bytes(ty) as u32;
        if ty == sys::SQFS_INODE_FILE || ty == sys::SQFS_INODE_EXT_FILE {
            match FileHead::read(&mut self.meta, iref, self.sup.block_size) {
                Ok(h) => Ok(Node::File(h)),
                Err(e) => Err(self.err(e)),
            }
        } else {
            self.inode(iref).map(Node::Other)
        }
    }

    pub(crate) fn root_node(&mut self) -> Result<Node> {
        self.root().map(Node::Other)
    }

    /// The layout of the file at `iref` (its block list read, holes compacted).
    pub(crate) fn file_layout(&mut self, iref: u64) -> Result<crate::layout::FileLayout> {
        let head = match FileHead::read(&mut self.meta, iref, self.sup.block_size) {
            Ok(h) => h,
            Err(e) => return Err(self.err(e)),
        };
        match head.layout(&mut self.meta) {
            Ok(l) => Ok(l),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Where fragment block `idx` is: `(image offset, size word)`.
    pub(super) fn fragment(&self, idx: u32) -> Result<(u64, u32)> {
        self.frags.lookup(idx).map_err(|e| self.err(e))
    }

    /// Every fragment block: `(image offset, size word)`.
    pub(crate) fn fragments(&self) -> Result<Vec<(u64, u32)>> {
        (0..self.frags.len())
            .map(|i| self.frags.lookup(i).map_err(|e| self.err(e)))
            .collect()
    }

    pub(super) fn root(&mut self) -> Result<Inode> {
        match self.meta.root_inode() {
            Ok(i) => Ok(i),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The inode at `path` (components already validated).
    pub(super) fn lookup(&mut self, comps: &[&[u8]]) -> Result<Node> {
        let at = self.lookup_ref(comps)?;
        self.node(at)
    }

    /// The reference of the inode at `path` (components already validated).
    pub(super) fn lookup_ref(&mut self, comps: &[&[u8]]) -> Result<u64> {
        let mut at = self.sup.root_inode_ref;
        for (i, c) in comps.iter().enumerate() {
            let node = self.node(at)?;
            let Some(dir) = node.dir() else {
                return Err(not_found(&comps[..i]));
            };
            let entries = self.read_dir(dir)?;
            match entries.into_iter().find(|e| e.name == *c) {
                Some(e) => at = e.iref,
                None => return Err(not_found(&comps[..=i])),
            }
        }
        Ok(at)
    }

    pub(crate) fn xattrs_of(&mut self, node: &Node) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let idx = node.xattr_index();
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

    pub(crate) fn owner(&self, node: &Node) -> Result<(u32, u32)> {
        let (_, uid_idx, gid_idx, _, _) = node.head();
        let uid = self.ids.id(uid_idx).map_err(|e| self.err(e))?;
        let gid = self.ids.id(gid_idx).map_err(|e| self.err(e))?;
        Ok((uid, gid))
    }

    pub(super) fn entry(&self, path: Vec<u8>, node: &Node) -> Result<Entry> {
        let kind = node.kind()?;
        let (uid, gid) = self.owner(node)?;
        let (mode, _, _, mtime, inum) = node.head();
        let rdev = matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice)
            .then(|| decode_dev(node.devno()));
        let (size, target) = match node {
            Node::File(f) => (f.size, None),
            Node::Other(i) if kind == EntryKind::Symlink => {
                (i.payload().len() as u64, Some(i.payload().to_vec()))
            }
            Node::Other(_) => (0, None),
        };
        Ok(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            nlink: node.nlink(),
            inode: inum,
            symlink_target: target,
            rdev,
        })
    }
}
