//! Compressors (and decompressors) for data and metadata blocks.

use std::ffi::c_int;
use std::ptr::{self, NonNull};

use super::{SqFile, SqResult, check, copy, destroy, nonnull};
use crate::sys;

pub struct Compressor {
    pub(super) ptr: NonNull<sys::sqfs_compressor_t>,
}

impl Compressor {
    /// A compressor (or, with `uncompress`, a decompressor) for `id`.
    /// `level`: `None` keeps libsquashfs's default; `lz4_hc` selects LZ4 HC.
    pub fn new(id: u32, block_size: u32, level: Option<u32>, uncompress: bool) -> SqResult<Self> {
        let mut cfg = sys::sqfs_compressor_config_t::default();
        let mut flags: u16 = 0;
        if uncompress {
            flags |= sys::SQFS_COMP_FLAG_UNCOMPRESS as u16;
        }
        check(
            unsafe { sys::sqfs_compressor_config_init(&mut cfg, id, block_size as usize, flags) },
            "configuring the compressor",
        )?;
        if let Some(level) = level {
            if id == sys::SQFS_COMP_LZ4 {
                if level > 0 {
                    cfg.flags |= sys::SQFS_COMP_FLAG_LZ4_HC as u16;
                }
            } else {
                cfg.level = level;
            }
        }
        let mut out = ptr::null_mut();
        check(
            unsafe { sys::sqfs_compressor_create(&cfg, &mut out) },
            "creating the compressor",
        )?;
        let inner = nonnull(out, "creating the compressor")?;
        if uncompress {
            return Ok(Compressor { ptr: inner });
        }
        Ok(Compressor {
            ptr: NoGrow::wrap(inner.as_ptr()),
        })
    }

    /// Write the compressor options block (if any) at the end of `file`;
    /// returns whether one was written.
    pub fn write_options(&self, file: &SqFile) -> SqResult<bool> {
        let cmp = self.ptr.as_ptr();
        let f = unsafe { (*cmp).write_options.expect("write_options") };
        let ret = unsafe { f(cmp, file.raw()) };
        check(ret, "writing compressor options")?;
        Ok(ret > 0)
    }

    pub fn read_options(&self, file: &SqFile) -> SqResult<()> {
        let cmp = self.ptr.as_ptr();
        let f = unsafe { (*cmp).read_options.expect("read_options") };
        check(unsafe { f(cmp, file.raw()) }, "reading compressor options")
    }

    /// Run the (de)compressor on one block: returns the output size, or 0
    /// when a compressor found the block incompressible.
    pub fn do_block(&self, input: &[u8], output: &mut [u8]) -> SqResult<usize> {
        let cmp = self.ptr.as_ptr();
        let f = unsafe { (*cmp).do_block.expect("do_block") };
        let ret = unsafe {
            f(
                cmp,
                input.as_ptr(),
                input.len() as u32,
                output.as_mut_ptr(),
                output.len() as u32,
            )
        };
        check(ret, "(de)compressing a block")?;
        Ok(ret as usize)
    }

    pub(super) fn raw(&self) -> *mut sys::sqfs_compressor_t {
        self.ptr.as_ptr()
    }
}

/// A compressor that never reports a block larger than its input as
/// compressed: libsquashfs 1.2's LZ4 does (a 4-byte id table became a 5-byte
/// "compressed" block, which unsquashfs 4.5.1 rejects as corruption). It
/// answers 0 ("store uncompressed") instead, as the other compressors do.
#[repr(C)]
struct NoGrow {
    base: sys::sqfs_compressor_t, // first: libsquashfs casts to it
    inner: *mut sys::sqfs_compressor_t,
}

impl NoGrow {
    fn wrap(inner: *mut sys::sqfs_compressor_t) -> NonNull<sys::sqfs_compressor_t> {
        let b = Box::new(NoGrow {
            base: sys::sqfs_compressor_t {
                base: sys::sqfs_object_t {
                    destroy: Some(nogrow_destroy),
                    copy: Some(nogrow_copy),
                },
                get_configuration: Some(nogrow_get_configuration),
                write_options: Some(nogrow_write_options),
                read_options: Some(nogrow_read_options),
                do_block: Some(nogrow_do_block),
            },
            inner,
        });
        NonNull::from(Box::leak(b)).cast()
    }
}

unsafe fn nogrow_inner(c: *const sys::sqfs_compressor_t) -> *mut sys::sqfs_compressor_t {
    unsafe { (*(c as *const NoGrow)).inner }
}

unsafe extern "C" fn nogrow_destroy(obj: *mut sys::sqfs_object_t) {
    unsafe {
        let me = Box::from_raw(obj as *mut NoGrow);
        destroy(me.inner);
    }
}

unsafe extern "C" fn nogrow_copy(obj: *const sys::sqfs_object_t) -> *mut sys::sqfs_object_t {
    unsafe {
        let inner = copy(nogrow_inner(obj as *const sys::sqfs_compressor_t));
        if inner.is_null() {
            return ptr::null_mut();
        }
        NoGrow::wrap(inner).as_ptr() as *mut sys::sqfs_object_t
    }
}

unsafe extern "C" fn nogrow_get_configuration(
    c: *const sys::sqfs_compressor_t,
    cfg: *mut sys::sqfs_compressor_config_t,
) {
    unsafe {
        let inner = nogrow_inner(c);
        (*inner).get_configuration.expect("get_configuration")(inner, cfg)
    }
}

unsafe extern "C" fn nogrow_write_options(
    c: *mut sys::sqfs_compressor_t,
    f: *mut sys::sqfs_file_t,
) -> c_int {
    unsafe {
        let inner = nogrow_inner(c);
        (*inner).write_options.expect("write_options")(inner, f)
    }
}

unsafe extern "C" fn nogrow_read_options(
    c: *mut sys::sqfs_compressor_t,
    f: *mut sys::sqfs_file_t,
) -> c_int {
    unsafe {
        let inner = nogrow_inner(c);
        (*inner).read_options.expect("read_options")(inner, f)
    }
}

unsafe extern "C" fn nogrow_do_block(
    c: *mut sys::sqfs_compressor_t,
    input: *const u8,
    size: u32,
    out: *mut u8,
    outsize: u32,
) -> i32 {
    let ret = unsafe {
        let inner = nogrow_inner(c);
        (*inner).do_block.expect("do_block")(inner, input, size, out, outsize)
    };
    if ret > 0 && ret as u32 >= size {
        0
    } else {
        ret
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}
