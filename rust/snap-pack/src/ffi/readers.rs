//! Readers: metadata tables, file data, xattrs.

use std::ffi::{CStr, c_void};
use std::ptr::{self, NonNull};
use std::rc::Rc;

use super::{Compressor, Inode, SqFile, SqResult, SqfsError, Super, check, destroy, nonnull};
use crate::sys;

/// The inode and directory tables of an image, each read through a few
/// metadata readers that cache the block they read last (see [`Readers`]).
pub struct MetaTables {
    inodes: Readers,
    dirs: Readers,
    /// The inode reader [`MetaTables::seek_inode`] positioned last.
    inode_at: usize,
    sup: Rc<Super>,
    _deps: (Rc<Compressor>, Rc<SqFile>),
}

/// Metadata readers per table. A reader decompresses a block whenever it is
/// sent to another one, and an unpack goes back and forth: a directory's
/// listing, its files' inodes, its subdirectories' inodes (written after
/// their children), and in a chain's image inodes packed by earlier links.
/// With one reader per table, a 14-link chain's image decompressed 3,950
/// metadata blocks for 22,000 inodes (unsquashfs reads each table once).
const READERS: usize = 8;

/// A table's readers; a read goes to the one whose block it wants, or else
/// to the one used longest ago.
struct Readers {
    /// Each reader and when it was used last.
    all: Vec<(NonNull<sys::sqfs_meta_reader_t>, u64)>,
    clock: u64,
}

impl Readers {
    fn new(file: &SqFile, cmp: &Compressor, start: u64, limit: u64) -> SqResult<Self> {
        let mut r = Readers {
            all: Vec::with_capacity(READERS),
            clock: 0,
        };
        for _ in 0..READERS {
            let p = unsafe { sys::sqfs_meta_reader_create(file.raw(), cmp.raw(), start, limit) };
            r.all
                .push((nonnull(p, "creating a metadata table reader")?, 0));
        }
        Ok(r)
    }

    /// The reader for a read in the block at `block` (an image offset).
    fn pick(&mut self, block: u64) -> usize {
        self.clock += 1;
        let holding = self.all.iter().position(|(r, _)| {
            let (mut at, mut offset) = (u64::MAX, 0usize);
            unsafe { sys::sqfs_meta_reader_get_position(r.as_ptr(), &mut at, &mut offset) };
            at == block
        });
        let i = holding.unwrap_or_else(|| {
            (0..self.all.len())
                .min_by_key(|&i| self.all[i].1)
                .expect("readers")
        });
        self.all[i].1 = self.clock;
        i
    }

    fn get(&self, i: usize) -> *mut sys::sqfs_meta_reader_t {
        self.all[i].0.as_ptr()
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        for (r, _) in &self.all {
            unsafe { destroy(r.as_ptr()) };
        }
    }
}

/// One directory entry: name, inode number and reference, basic inode type.
pub struct DirEnt {
    pub name: Vec<u8>,
    pub inum: u32,
    pub iref: u64,
    pub type_: u32,
}

impl MetaTables {
    pub fn new(sup: Rc<Super>, cmp: Rc<Compressor>, file: Rc<SqFile>) -> SqResult<Self> {
        // The same bounds libsquashfs's own directory reader uses.
        let mut dir_limit = sup.id_table_start;
        dir_limit = dir_limit.min(sup.fragment_table_start);
        dir_limit = dir_limit.min(sup.export_table_start);
        let inodes = Readers::new(
            &file,
            &cmp,
            sup.inode_table_start,
            sup.directory_table_start,
        )?;
        let dirs = Readers::new(&file, &cmp, sup.directory_table_start, dir_limit)?;
        Ok(MetaTables {
            inodes,
            dirs,
            inode_at: 0,
            sup,
            _deps: (cmp, file),
        })
    }

    /// The image offset of the inode block `iref` names (the table's start
    /// is the image's word: a forged one near 2^64 is an error, not a wrap).
    fn inode_block(&self, iref: u64) -> SqResult<u64> {
        self.sup
            .inode_table_start
            .checked_add(iref >> 16)
            .ok_or(SqfsError {
                code: sys::SQFS_ERROR_OUT_OF_BOUNDS,
                what: "reading an inode past the end of the address space",
            })
    }

    /// The inode at reference `iref` (`block << 16 | offset` in the inode table).
    pub fn inode(&mut self, iref: u64) -> SqResult<Inode> {
        let mut out = ptr::null_mut();
        let r = self.inodes.pick(self.inode_block(iref)?);
        check(
            unsafe {
                sys::sqfs_meta_reader_read_inode(
                    self.inodes.get(r),
                    &*self.sup,
                    iref >> 16,
                    (iref & 0xFFFF) as usize,
                    &mut out,
                )
            },
            "reading an inode",
        )?;
        Inode::from_raw(out, "inode")
    }

    /// Position the inode reader at reference `iref`, for [`MetaTables::read_inode_bytes`].
    pub fn seek_inode(&mut self, iref: u64) -> SqResult<()> {
        let block = self.inode_block(iref)?;
        self.inode_at = self.inodes.pick(block);
        check(
            unsafe {
                sys::sqfs_meta_reader_seek(
                    self.inodes.get(self.inode_at),
                    block,
                    (iref & 0xFFFF) as usize,
                )
            },
            "seeking to an inode",
        )
    }

    /// Read the next raw bytes of the inode table (an inode parsed by the caller).
    pub fn read_inode_bytes(&mut self, buf: &mut [u8]) -> SqResult<()> {
        check(
            unsafe {
                sys::sqfs_meta_reader_read(
                    self.inodes.get(self.inode_at),
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len(),
                )
            },
            "reading an inode",
        )
    }

    pub fn root_inode(&mut self) -> SqResult<Inode> {
        let r = self.sup.root_inode_ref;
        self.inode(r)
    }

    /// All entries of directory `dir`, in stored (name) order, without
    /// reading their inodes.
    pub fn read_dir(&mut self, dir: &Inode) -> SqResult<Vec<DirEnt>> {
        let mut state = sys::sqfs_readdir_state_t::default();
        check(
            unsafe { sys::sqfs_readdir_state_init(&mut state, &*self.sup, dir.ptr.as_ptr()) },
            "opening a directory",
        )?;
        // The listing is read through one reader, which starts at its block.
        let r = self.dirs.pick(state.init.block);
        let mut out = Vec::new();
        loop {
            let mut ent: *mut sys::sqfs_dir_entry_t = ptr::null_mut();
            let mut inum = 0;
            let mut iref = 0;
            let ret = unsafe {
                sys::sqfs_meta_reader_readdir(
                    self.dirs.get(r),
                    &mut state,
                    &mut ent,
                    &mut inum,
                    &mut iref,
                )
            };
            check(ret, "reading a directory")?;
            if ret > 0 || ent.is_null() {
                break;
            }
            let item = unsafe {
                let e = &*ent;
                DirEnt {
                    name: std::slice::from_raw_parts(e.name.as_ptr(), e.size as usize + 1).to_vec(),
                    inum,
                    iref,
                    type_: e.type_ as u32,
                }
            };
            unsafe { sys::sqfs_free(ent as *mut c_void) };
            out.push(item);
        }
        Ok(out)
    }
}

/// The most bytes of names and values one entry's xattrs may take: Linux
/// lists at most 64 KiB of names, each value at most 64 KiB, so a real file
/// stays far below this; a set that claims more is a forged image.
pub const XATTR_SET_MAX: u64 = 64 << 20;

pub struct XattrReader {
    pub(super) ptr: NonNull<sys::sqfs_xattr_reader_t>,
    _deps: (Rc<Compressor>, Rc<SqFile>),
}

impl XattrReader {
    pub fn new(sup: &Super, cmp: Rc<Compressor>, file: Rc<SqFile>) -> SqResult<Self> {
        let p = unsafe { sys::sqfs_xattr_reader_create(0) };
        let r = XattrReader {
            ptr: nonnull(p, "creating the xattr reader")?,
            _deps: (cmp.clone(), file.clone()),
        };
        check(
            unsafe { sys::sqfs_xattr_reader_load(r.ptr.as_ptr(), sup, file.raw(), cmp.raw()) },
            "loading the xattr table",
        )?;
        Ok(r)
    }

    /// All `(full key, value)` pairs of xattr set `idx`.
    pub fn get(&mut self, idx: u32) -> SqResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut desc = sys::sqfs_xattr_id_t::default();
        let xr = self.ptr.as_ptr();
        check(
            unsafe { sys::sqfs_xattr_reader_get_desc(xr, idx, &mut desc) },
            "reading an xattr descriptor",
        )?;
        // The descriptor is the image's word: a pair takes at least 8 bytes
        // (key and value headers), and no set may be larger than Linux lets
        // one file have. Checked before anything is allocated from it.
        if desc.count as u64 * 8 > desc.size as u64 || desc.size as u64 > XATTR_SET_MAX {
            return Err(SqfsError {
                code: sys::SQFS_ERROR_CORRUPTED,
                what: "reading an xattr set that claims more pairs or bytes than it can hold",
            });
        }
        check(
            unsafe { sys::sqfs_xattr_reader_seek_kv(xr, &desc) },
            "seeking to xattrs",
        )?;
        let mut out = Vec::with_capacity((desc.count as usize).min(64));
        for _ in 0..desc.count {
            let mut key: *mut sys::sqfs_xattr_entry_t = ptr::null_mut();
            check(
                unsafe { sys::sqfs_xattr_reader_read_key(xr, &mut key) },
                "reading an xattr key",
            )?;
            let mut val: *mut sys::sqfs_xattr_value_t = ptr::null_mut();
            let r = unsafe { sys::sqfs_xattr_reader_read_value(xr, key, &mut val) };
            let pair = unsafe {
                let k = &*key;
                let prefix = sys::sqfs_get_xattr_prefix(
                    (k.type_ as u32 & sys::SQFS_XATTR_PREFIX_MASK) as sys::SQFS_XATTR_TYPE,
                );
                // The key comes back with its namespace prefix in front.
                let plen = if prefix.is_null() {
                    0
                } else {
                    CStr::from_ptr(prefix).to_bytes().len()
                };
                let name =
                    std::slice::from_raw_parts(k.key.as_ptr(), plen + k.size as usize).to_vec();
                let value = if r == 0 && !val.is_null() {
                    let v = &*val;
                    std::slice::from_raw_parts(v.value.as_ptr(), v.size as usize).to_vec()
                } else {
                    Vec::new()
                };
                (name, value)
            };
            unsafe {
                sys::sqfs_free(key as *mut c_void);
                sys::sqfs_free(val as *mut c_void);
            }
            check(r, "reading an xattr value")?;
            out.push(pair);
        }
        Ok(out)
    }
}

impl Drop for XattrReader {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}
