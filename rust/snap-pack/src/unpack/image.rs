#![forbid(unsafe_code)]
//! An open image: metadata tables, data, xattrs, ids.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use snap_core::{Error, ErrorKind, Result};

use super::{Entry, EntryKind, check_name, decode_dev, not_found};
use crate::ffi::{
    self, Compressor, DataReader, DirEnt, IdTable, Inode, MetaTables, SqFile, XattrReader,
};
use crate::sys;
use crate::util::{io_err, show, sq_err};

/// An open image.
pub(super) struct Image {
    pub(super) path: PathBuf,
    pub(super) file: Rc<SqFile>,
    pub(super) sup: Rc<ffi::Super>,
    pub(super) meta: MetaTables,
    pub(super) data: DataReader,
    pub(super) xattrs: Option<XattrReader>,
    pub(super) ids: IdTable,
}

impl Image {
    pub(super) fn open(path: &Path) -> Result<Image> {
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

    pub(super) fn err(&self, e: ffi::SqfsError) -> Error {
        if let Some(io) = self.file.take_error() {
            return io_err("reading image", &self.path, io).context(e.describe());
        }
        sq_err(e, &[]).context(format!("image {}", show(&self.path)))
    }

    /// Entries of a directory inode, in stored order (inodes not read).
    pub(super) fn read_dir(&mut self, dir: &Inode) -> Result<Vec<DirEnt>> {
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

    pub(super) fn root(&mut self) -> Result<Inode> {
        match self.meta.root_inode() {
            Ok(i) => Ok(i),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The inode at `path` (components already validated).
    pub(super) fn lookup(&mut self, comps: &[&[u8]]) -> Result<Inode> {
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

    pub(super) fn xattrs_of(&mut self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
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

    pub(super) fn owner(&self, inode: &Inode) -> Result<(u32, u32)> {
        let b = inode.base();
        let uid = self.ids.id(b.uid_idx).map_err(|e| self.err(e))?;
        let gid = self.ids.id(b.gid_idx).map_err(|e| self.err(e))?;
        Ok((uid, gid))
    }

    pub(super) fn entry(&self, path: Vec<u8>, inode: &Inode) -> Result<Entry> {
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
