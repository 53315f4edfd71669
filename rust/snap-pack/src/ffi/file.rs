//! Our own `sqfs_file_t` over a std `File`.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

use crate::sys;

/// Our own `sqfs_file_t`: positional I/O on a std `File`, remembering the
/// last OS error so callers can tell a full disk from other failures.
#[repr(C)]
struct FileObj {
    base: sys::sqfs_file_t, // must stay first: libsquashfs casts to it
    file: File,
    size: u64,
    error: RefCell<Option<io::Error>>,
}

unsafe extern "C" fn file_destroy(_obj: *mut sys::sqfs_object_t) {
    // Owned by `SqFile`; libsquashfs never destroys a file it was given.
}

unsafe extern "C" fn file_read_at(
    f: *mut sys::sqfs_file_t,
    offset: u64,
    buf: *mut c_void,
    size: usize,
) -> c_int {
    let obj = unsafe { &*(f as *const FileObj) };
    if offset
        .checked_add(size as u64)
        .is_none_or(|end| end > obj.size)
    {
        return sys::SQFS_ERROR_OUT_OF_BOUNDS;
    }
    let slice = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, size) };
    match obj.file.read_exact_at(slice, offset) {
        Ok(()) => 0,
        Err(e) => {
            *obj.error.borrow_mut() = Some(e);
            sys::SQFS_ERROR_IO
        }
    }
}

unsafe extern "C" fn file_write_at(
    f: *mut sys::sqfs_file_t,
    offset: u64,
    buf: *const c_void,
    size: usize,
) -> c_int {
    let obj = unsafe { &mut *(f as *mut FileObj) };
    let slice = unsafe { std::slice::from_raw_parts(buf as *const u8, size) };
    match obj.file.write_all_at(slice, offset) {
        Ok(()) => {
            obj.size = obj.size.max(offset + size as u64);
            0
        }
        Err(e) => {
            *obj.error.borrow_mut() = Some(e);
            sys::SQFS_ERROR_IO
        }
    }
}

unsafe extern "C" fn file_get_size(f: *const sys::sqfs_file_t) -> u64 {
    unsafe { (*(f as *const FileObj)).size }
}

unsafe extern "C" fn file_truncate(f: *mut sys::sqfs_file_t, size: u64) -> c_int {
    let obj = unsafe { &mut *(f as *mut FileObj) };
    match obj.file.set_len(size) {
        Ok(()) => {
            obj.size = size;
            0
        }
        Err(e) => {
            *obj.error.borrow_mut() = Some(e);
            sys::SQFS_ERROR_IO
        }
    }
}

/// A file libsquashfs reads from or writes to.
pub struct SqFile {
    obj: NonNull<FileObj>,
}

impl SqFile {
    /// Wrap an open file; `size` is its current length.
    pub fn new(file: File, size: u64) -> SqFile {
        let obj = Box::new(FileObj {
            base: sys::sqfs_file_t {
                base: sys::sqfs_object_t {
                    destroy: Some(file_destroy),
                    copy: None,
                },
                read_at: Some(file_read_at),
                write_at: Some(file_write_at),
                get_size: Some(file_get_size),
                truncate: Some(file_truncate),
            },
            file,
            size,
            error: RefCell::new(None),
        });
        SqFile {
            obj: NonNull::from(Box::leak(obj)),
        }
    }

    pub(super) fn raw(&self) -> *mut sys::sqfs_file_t {
        self.obj.as_ptr() as *mut sys::sqfs_file_t
    }

    fn inner(&self) -> &FileObj {
        unsafe { self.obj.as_ref() }
    }

    pub fn size(&self) -> u64 {
        self.inner().size
    }

    /// The OS error behind the last `SQFS_ERROR_IO`, if any.
    pub fn take_error(&self) -> Option<io::Error> {
        self.inner().error.borrow_mut().take()
    }

    pub fn file(&self) -> &File {
        &self.inner().file
    }

    /// Append bytes at the end (through the same size bookkeeping as libsquashfs).
    pub fn append(&self, data: &[u8]) -> io::Result<()> {
        let obj = unsafe { &mut *self.obj.as_ptr() };
        obj.file.write_all_at(data, obj.size)?;
        obj.size += data.len() as u64;
        Ok(())
    }
}

impl Drop for SqFile {
    fn drop(&mut self) {
        drop(unsafe { Box::from_raw(self.obj.as_ptr()) });
    }
}
