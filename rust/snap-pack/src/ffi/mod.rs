//! Safe RAII wrappers over libsquashfs (squashfs-tools-ng 1.2). All `unsafe`
//! of the crate lives in this module (and in the generated `sys` bindings).
//!
//! Ownership: every libsquashfs object that keeps a pointer to another one
//! holds an `Rc` of the wrapper it points to, so the pointee outlives it.
//! None of these types is `Send`: an image is written or read from one thread
//! (libsquashfs's block processor runs its own compression workers inside).

mod compressor;
mod file;
mod inode;
mod readers;
mod writers;

use std::ffi::c_int;
use std::ptr::{self, NonNull};

use crate::sys;

pub use compressor::Compressor;
pub use file::{HEAD, Present, SqFile};
pub use inode::Inode;
pub use readers::{DirEnt, MetaTables, XattrReader};
pub use writers::{
    BlockProcessor, BlockWriter, DirWriter, FragTable, IdTable, MetaWriter, XattrWriter,
};

/// A libsquashfs error code with what was being done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqfsError {
    pub code: i32,
    pub what: &'static str,
}

impl SqfsError {
    pub fn describe(&self) -> String {
        let text = match self.code {
            sys::SQFS_ERROR_ALLOC => "out of memory",
            sys::SQFS_ERROR_IO => "I/O error",
            sys::SQFS_ERROR_COMPRESSOR => "compressor error",
            sys::SQFS_ERROR_INTERNAL => "internal error",
            sys::SQFS_ERROR_CORRUPTED => "data corrupted",
            sys::SQFS_ERROR_UNSUPPORTED => "unsupported",
            sys::SQFS_ERROR_OVERFLOW => "numeric overflow",
            sys::SQFS_ERROR_OUT_OF_BOUNDS => "out of bounds",
            sys::SFQS_ERROR_SUPER_MAGIC => "not a SquashFS image (bad magic)",
            sys::SFQS_ERROR_SUPER_VERSION => "unsupported SquashFS version",
            sys::SQFS_ERROR_SUPER_BLOCK_SIZE => "invalid block size",
            sys::SQFS_ERROR_NOT_DIR => "not a directory",
            sys::SQFS_ERROR_NO_ENTRY => "no such entry",
            sys::SQFS_ERROR_LINK_LOOP => "hard link loop",
            sys::SQFS_ERROR_NOT_FILE => "not a regular file",
            sys::SQFS_ERROR_ARG_INVALID => "invalid argument",
            sys::SQFS_ERROR_SEQUENCE => "call sequence error",
            _ => "unknown error",
        };
        format!("libsquashfs: {}: {text} ({})", self.what, self.code)
    }
}

pub type SqResult<T> = std::result::Result<T, SqfsError>;

pub(super) fn check(ret: c_int, what: &'static str) -> SqResult<()> {
    if ret < 0 {
        Err(SqfsError { code: ret, what })
    } else {
        Ok(())
    }
}

pub(super) fn nonnull<T>(p: *mut T, what: &'static str) -> SqResult<NonNull<T>> {
    NonNull::new(p).ok_or(SqfsError {
        code: sys::SQFS_ERROR_ALLOC,
        what,
    })
}

/// `sqfs_destroy` is a static inline in the headers: call the object's destructor.
pub(super) unsafe fn destroy<T>(p: *mut T) {
    if !p.is_null() {
        let obj = p as *mut sys::sqfs_object_t;
        unsafe {
            if let Some(d) = (*obj).destroy {
                d(obj);
            }
        }
    }
}

/// `sqfs_copy`, also a static inline.
pub(super) unsafe fn copy<T>(p: *const T) -> *mut T {
    let obj = p as *const sys::sqfs_object_t;
    unsafe {
        match (*obj).copy {
            Some(c) => c(obj) as *mut T,
            None => ptr::null_mut(),
        }
    }
}

// ---------------------------------------------------------------- super block

pub type Super = sys::sqfs_super_t;

pub fn super_init(block_size: u32, mtime: u32, comp_id: u32) -> SqResult<Super> {
    let mut s = Super::default();
    check(
        unsafe { sys::sqfs_super_init(&mut s, block_size as usize, mtime, comp_id) },
        "initialising the super block",
    )?;
    Ok(s)
}

pub fn super_write(s: &Super, file: &SqFile) -> SqResult<()> {
    check(
        unsafe { sys::sqfs_super_write(s, file.raw()) },
        "writing the super block",
    )
}

pub fn super_read(file: &SqFile) -> SqResult<Super> {
    let mut s = Super::default();
    check(
        unsafe { sys::sqfs_super_read(&mut s, file.raw()) },
        "reading the super block",
    )?;
    Ok(s)
}

/// The inode generation (`FS_IOC_GETVERSION`) of an open file, where the
/// file system keeps one (ext4, XFS, btrfs; not tmpfs).
pub fn inode_generation(f: &std::fs::File) -> Option<u32> {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
    // The kernel writes an int; the ioctl is declared with a long.
    let mut out: libc::c_long = 0;
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETVERSION, &mut out) };
    (ret == 0).then_some(out as u32)
}
