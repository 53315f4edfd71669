//! Our own `sqfs_file_t` over a std `File`.
//!
//! A file can stand for the part of an image that starts at offset `base`
//! (the tail a chain link adds): image offsets at or after `base` map to the
//! file, and the first [`HEAD`] bytes (the super block) live in memory, so
//! libsquashfs writes and reads a whole image while only the tail is on disk.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::sys;

/// Bytes of the super block, kept in memory by a tail file.
pub const HEAD: usize = 96;

/// Our own `sqfs_file_t`: positional I/O on a std `File`, remembering the
/// last OS error so callers can tell a full disk from other failures.
#[repr(C)]
struct FileObj {
    base_obj: sys::sqfs_file_t, // must stay first: libsquashfs casts to it
    file: File,
    /// Image offset of the file's first byte.
    base: u64,
    /// Image size (base + file length).
    size: u64,
    head: [u8; HEAD],
    error: RefCell<Option<io::Error>>,
    /// When set, the only bytes there are to read (see [`Present`]).
    present: Option<Arc<Present>>,
}

/// The byte ranges of an image that were filled in. A chain restore fetches
/// only the pieces its selection needs and leaves the rest of the image a
/// hole: a read that reaches outside these ranges fails, naming the bytes,
/// instead of returning zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Present(Vec<(u64, u64)>);

impl Present {
    /// The ranges `[start, end)`, in any order; overlapping and touching
    /// ones are merged, empty ones dropped.
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Present {
        ranges.retain(|(s, e)| s < e);
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Present(out)
    }

    /// Whether all `len` bytes at `off` are present.
    pub fn covers(&self, off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else {
            return false;
        };
        if len == 0 {
            return true;
        }
        // The last range starting at or before `off`.
        let i = self.0.partition_point(|&(s, _)| s <= off);
        i > 0 && self.0[i - 1].1 >= end
    }

    /// Whether any of `[start, end)` is present.
    pub fn touches(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_some_and(|&(s, _)| s < end)
    }

    /// The merged ranges, in order.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Bytes present.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    fn check(&self, off: u64, len: usize) -> io::Result<()> {
        if self.covers(off, len as u64) {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "image bytes {off}..{} were not fetched: they lie in a piece this restore left out",
            off.saturating_add(len as u64)
        )))
    }
}

enum Place {
    File(u64),
    Head(usize),
}

impl FileObj {
    /// Where `len` bytes at image offset `off` live, if anywhere.
    fn place(&self, off: u64, len: usize) -> Option<Place> {
        let end = off.checked_add(len as u64)?;
        if off >= self.base {
            Some(Place::File(off - self.base))
        } else if self.base >= HEAD as u64 && end <= HEAD as u64 {
            Some(Place::Head(off as usize))
        } else {
            None
        }
    }

    fn fail(&self, e: io::Error) -> c_int {
        *self.error.borrow_mut() = Some(e);
        sys::SQFS_ERROR_IO
    }
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
    if let Some(Err(e)) = obj.present.as_ref().map(|p| p.check(offset, size)) {
        return obj.fail(e);
    }
    let slice = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, size) };
    match obj.place(offset, size) {
        Some(Place::File(at)) => match obj.file.read_exact_at(slice, at) {
            Ok(()) => 0,
            Err(e) => obj.fail(e),
        },
        Some(Place::Head(at)) => {
            slice.copy_from_slice(&obj.head[at..at + size]);
            0
        }
        None => sys::SQFS_ERROR_OUT_OF_BOUNDS,
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
    match obj.place(offset, size) {
        Some(Place::File(at)) => match obj.file.write_all_at(slice, at) {
            Ok(()) => {
                obj.size = obj.size.max(offset + size as u64);
                0
            }
            Err(e) => obj.fail(e),
        },
        Some(Place::Head(at)) => {
            obj.head[at..at + size].copy_from_slice(slice);
            0
        }
        None => sys::SQFS_ERROR_OUT_OF_BOUNDS,
    }
}

unsafe extern "C" fn file_get_size(f: *const sys::sqfs_file_t) -> u64 {
    unsafe { (*(f as *const FileObj)).size }
}

unsafe extern "C" fn file_truncate(f: *mut sys::sqfs_file_t, size: u64) -> c_int {
    let obj = unsafe { &mut *(f as *mut FileObj) };
    if size < obj.base {
        return sys::SQFS_ERROR_OUT_OF_BOUNDS;
    }
    match obj.file.set_len(size - obj.base) {
        Ok(()) => {
            obj.size = size;
            0
        }
        Err(e) => obj.fail(e),
    }
}

/// A file libsquashfs reads from or writes to.
pub struct SqFile {
    obj: NonNull<FileObj>,
}

impl SqFile {
    /// Wrap an open file; `size` is its current length.
    pub fn new(file: File, size: u64) -> SqFile {
        SqFile::with_base(file, size, 0, [0; HEAD])
    }

    /// A file holding the image from offset `base` on (its `len` bytes),
    /// with the super block `head` in memory. `base` is 0 or at least [`HEAD`].
    pub fn with_base(file: File, len: u64, base: u64, head: [u8; HEAD]) -> SqFile {
        SqFile::build(file, len, base, head, None)
    }

    /// A whole image of `size` bytes of which only `present` may be read.
    pub fn with_present(file: File, size: u64, present: Option<Arc<Present>>) -> SqFile {
        SqFile::build(file, size, 0, [0; HEAD], present)
    }

    fn build(
        file: File,
        len: u64,
        base: u64,
        head: [u8; HEAD],
        present: Option<Arc<Present>>,
    ) -> SqFile {
        let obj = Box::new(FileObj {
            base_obj: sys::sqfs_file_t {
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
            base,
            size: base + len,
            head,
            error: RefCell::new(None),
            present,
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

    /// Size of the image (for a tail file: its base plus its length).
    pub fn size(&self) -> u64 {
        self.inner().size
    }

    /// Image offset of the file's first byte.
    pub fn base(&self) -> u64 {
        self.inner().base
    }

    /// The in-memory super block of a tail file.
    pub fn head(&self) -> [u8; HEAD] {
        self.inner().head
    }

    /// The OS error behind the last `SQFS_ERROR_IO`, if any.
    pub fn take_error(&self) -> Option<io::Error> {
        self.inner().error.borrow_mut().take()
    }

    pub fn file(&self) -> &File {
        &self.inner().file
    }

    /// Read `buf.len()` bytes at image offset `off` (not from the head).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let obj = self.inner();
        if let Some(p) = &obj.present {
            p.check(off, buf.len())?;
        }
        match obj.place(off, buf.len()) {
            Some(Place::File(at)) if off + buf.len() as u64 <= obj.size => {
                obj.file.read_exact_at(buf, at)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} bytes at {off} lie outside the image data ({}..{})",
                    buf.len(),
                    obj.base,
                    obj.size
                ),
            )),
        }
    }

    /// Append bytes at the end (through the same size bookkeeping as libsquashfs).
    pub fn append(&self, data: &[u8]) -> io::Result<()> {
        let obj = unsafe { &mut *self.obj.as_ptr() };
        obj.file.write_all_at(data, obj.size - obj.base)?;
        obj.size += data.len() as u64;
        Ok(())
    }
}

impl Drop for SqFile {
    fn drop(&mut self) {
        drop(unsafe { Box::from_raw(self.obj.as_ptr()) });
    }
}
