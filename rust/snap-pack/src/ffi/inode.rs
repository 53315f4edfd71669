//! Inodes as libsquashfs holds them in memory.

use std::ffi::c_void;
use std::ptr::{self, NonNull};

use super::{SqResult, check, nonnull};
use crate::sys;

/// An inode owned by us (allocated by libsquashfs or with `calloc`, freed with `sqfs_free`).
pub struct Inode {
    pub(super) ptr: NonNull<sys::sqfs_inode_generic_t>,
}

impl Inode {
    pub(super) fn from_raw(
        p: *mut sys::sqfs_inode_generic_t,
        what: &'static str,
    ) -> SqResult<Self> {
        Ok(Inode {
            ptr: nonnull(p, what)?,
        })
    }

    /// A zeroed inode of `type_` with `payload` extra bytes.
    pub fn alloc(type_: u32, payload: &[u8]) -> SqResult<Self> {
        let size = std::mem::size_of::<sys::sqfs_inode_generic_t>() + payload.len();
        let p = unsafe { libc::calloc(1, size) } as *mut sys::sqfs_inode_generic_t;
        let mut inode = Inode::from_raw(p, "allocating an inode")?;
        let g = inode.generic_mut();
        g.base.type_ = type_ as u16;
        g.payload_bytes_available = payload.len() as u32;
        g.payload_bytes_used = payload.len() as u32;
        unsafe {
            ptr::copy_nonoverlapping(
                payload.as_ptr(),
                g.extra.as_mut_ptr() as *mut u8,
                payload.len(),
            );
        }
        Ok(inode)
    }

    pub fn base(&self) -> &sys::sqfs_inode_t {
        unsafe { &self.ptr.as_ref().base }
    }

    pub fn base_mut(&mut self) -> &mut sys::sqfs_inode_t {
        unsafe { &mut self.ptr.as_mut().base }
    }

    pub fn generic(&self) -> &sys::sqfs_inode_generic_t {
        unsafe { self.ptr.as_ref() }
    }

    pub fn generic_mut(&mut self) -> &mut sys::sqfs_inode_generic_t {
        unsafe { self.ptr.as_mut() }
    }

    pub fn data(&self) -> &sys::sqfs_inode_generic_t__bindgen_ty_1 {
        &self.generic().data
    }

    pub fn data_mut(&mut self) -> &mut sys::sqfs_inode_generic_t__bindgen_ty_1 {
        &mut self.generic_mut().data
    }

    pub fn make_extended(&mut self) -> SqResult<()> {
        check(
            unsafe { sys::sqfs_inode_make_extended(self.ptr.as_ptr()) },
            "extending an inode",
        )
    }

    /// Set the xattr index (extends the inode); no-op for `0xFFFFFFFF`.
    pub fn set_xattr_index(&mut self, idx: u32) -> SqResult<()> {
        if idx == 0xFFFF_FFFF {
            return Ok(());
        }
        self.make_extended()?;
        check(
            unsafe { sys::sqfs_inode_set_xattr_index(self.ptr.as_ptr(), idx) },
            "setting an xattr index",
        )
    }

    pub fn xattr_index(&self) -> u32 {
        let mut out = 0xFFFF_FFFF;
        unsafe { sys::sqfs_inode_get_xattr_index(self.ptr.as_ptr(), &mut out) };
        out
    }

    pub fn file_size(&self) -> SqResult<u64> {
        let mut out = 0;
        check(
            unsafe { sys::sqfs_inode_get_file_size(self.ptr.as_ptr(), &mut out) },
            "reading a file size",
        )?;
        Ok(out)
    }

    /// `(blocks_start, fragment index, fragment offset)` of a file inode.
    pub fn file_location(&self) -> (u64, u32, u32) {
        let mut start = 0;
        let (mut idx, mut off) = (0, 0);
        unsafe {
            sys::sqfs_inode_get_file_block_start(self.ptr.as_ptr(), &mut start);
            sys::sqfs_inode_get_frag_location(self.ptr.as_ptr(), &mut idx, &mut off);
        }
        (start, idx, off)
    }

    /// The block size words of a file inode.
    pub fn block_sizes(&self) -> &[u32] {
        let g = self.generic();
        unsafe { std::slice::from_raw_parts(g.extra.as_ptr(), g.payload_bytes_used as usize / 4) }
    }

    /// The payload bytes (symlink target).
    pub fn payload(&self) -> &[u8] {
        let g = self.generic();
        unsafe {
            std::slice::from_raw_parts(g.extra.as_ptr() as *const u8, g.payload_bytes_used as usize)
        }
    }

    /// The on-disk type (basic and extended alike), as the `SQFS_INODE_*` basic type.
    pub fn basic_type(&self) -> u32 {
        let t = self.base().type_ as u32;
        if t >= sys::SQFS_INODE_EXT_DIR {
            t - 7
        } else {
            t
        }
    }

    /// Link count stored in the inode (1 for basic files, which have none).
    pub fn nlink(&self) -> u32 {
        let d = self.data();
        unsafe {
            match self.base().type_ as u32 {
                sys::SQFS_INODE_DIR => d.dir.nlink,
                sys::SQFS_INODE_EXT_DIR => d.dir_ext.nlink,
                sys::SQFS_INODE_FILE => 1,
                sys::SQFS_INODE_EXT_FILE => d.file_ext.nlink,
                sys::SQFS_INODE_SLINK => d.slink.nlink,
                sys::SQFS_INODE_EXT_SLINK => d.slink_ext.nlink,
                sys::SQFS_INODE_BDEV | sys::SQFS_INODE_CDEV => d.dev.nlink,
                sys::SQFS_INODE_EXT_BDEV | sys::SQFS_INODE_EXT_CDEV => d.dev_ext.nlink,
                sys::SQFS_INODE_FIFO | sys::SQFS_INODE_SOCKET => d.ipc.nlink,
                _ => d.ipc_ext.nlink,
            }
        }
    }

    /// Device number as stored (Linux "new" encoding).
    pub fn devno(&self) -> u32 {
        let d = self.data();
        unsafe {
            match self.base().type_ as u32 {
                sys::SQFS_INODE_BDEV | sys::SQFS_INODE_CDEV => d.dev.devno,
                sys::SQFS_INODE_EXT_BDEV | sys::SQFS_INODE_EXT_CDEV => d.dev_ext.devno,
                _ => 0,
            }
        }
    }

    /// Set the link count of a non-directory inode (extends files when > 1).
    pub fn set_nlink(&mut self, nlink: u32) -> SqResult<()> {
        if self.base().type_ as u32 == sys::SQFS_INODE_FILE && nlink != 1 {
            self.make_extended()?;
        }
        let t = self.base().type_ as u32;
        let d = self.data_mut();
        {
            match t {
                sys::SQFS_INODE_DIR => d.dir.nlink = nlink,
                sys::SQFS_INODE_EXT_DIR => d.dir_ext.nlink = nlink,
                sys::SQFS_INODE_FILE => {}
                sys::SQFS_INODE_EXT_FILE => d.file_ext.nlink = nlink,
                sys::SQFS_INODE_SLINK => d.slink.nlink = nlink,
                sys::SQFS_INODE_EXT_SLINK => d.slink_ext.nlink = nlink,
                sys::SQFS_INODE_BDEV | sys::SQFS_INODE_CDEV => d.dev.nlink = nlink,
                sys::SQFS_INODE_EXT_BDEV | sys::SQFS_INODE_EXT_CDEV => d.dev_ext.nlink = nlink,
                sys::SQFS_INODE_FIFO | sys::SQFS_INODE_SOCKET => d.ipc.nlink = nlink,
                _ => d.ipc_ext.nlink = nlink,
            }
        }
        Ok(())
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        unsafe { sys::sqfs_free(self.ptr.as_ptr() as *mut c_void) }
    }
}
