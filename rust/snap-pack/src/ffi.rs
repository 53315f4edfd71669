//! Safe RAII wrappers over libsquashfs (squashfs-tools-ng 1.2). All `unsafe`
//! of the crate lives in this module (and in the generated `sys` bindings).
//!
//! Ownership: every libsquashfs object that keeps a pointer to another one
//! holds an `Rc` of the wrapper it points to, so the pointee outlives it.
//! None of these types is `Send`: an image is written or read from one thread
//! (libsquashfs's block processor runs its own compression workers inside).

use std::cell::RefCell;
use std::ffi::{CStr, c_int, c_void};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::ptr::{self, NonNull};
use std::rc::Rc;

use crate::sys;

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

fn check(ret: c_int, what: &'static str) -> SqResult<()> {
    if ret < 0 {
        Err(SqfsError { code: ret, what })
    } else {
        Ok(())
    }
}

fn nonnull<T>(p: *mut T, what: &'static str) -> SqResult<NonNull<T>> {
    NonNull::new(p).ok_or(SqfsError {
        code: sys::SQFS_ERROR_ALLOC,
        what,
    })
}

/// `sqfs_destroy` is a static inline in the headers: call the object's destructor.
unsafe fn destroy<T>(p: *mut T) {
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
unsafe fn copy<T>(p: *const T) -> *mut T {
    let obj = p as *const sys::sqfs_object_t;
    unsafe {
        match (*obj).copy {
            Some(c) => c(obj) as *mut T,
            None => ptr::null_mut(),
        }
    }
}

// ---------------------------------------------------------------- files

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

    fn raw(&self) -> *mut sys::sqfs_file_t {
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

// ---------------------------------------------------------------- compressor

pub struct Compressor {
    ptr: NonNull<sys::sqfs_compressor_t>,
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

    fn raw(&self) -> *mut sys::sqfs_compressor_t {
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

// ---------------------------------------------------------------- inodes

/// An inode owned by us (allocated by libsquashfs or with `calloc`, freed with `sqfs_free`).
pub struct Inode {
    ptr: NonNull<sys::sqfs_inode_generic_t>,
}

impl Inode {
    fn from_raw(p: *mut sys::sqfs_inode_generic_t, what: &'static str) -> SqResult<Self> {
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

// ---------------------------------------------------------------- writers

pub struct BlockWriter {
    ptr: NonNull<sys::sqfs_block_writer_t>,
    _file: Rc<SqFile>,
}

impl BlockWriter {
    pub fn new(file: Rc<SqFile>) -> SqResult<Self> {
        let p = unsafe { sys::sqfs_block_writer_create(file.raw(), 4096, 0) };
        Ok(BlockWriter {
            ptr: nonnull(p, "creating the block writer")?,
            _file: file,
        })
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}

pub struct FragTable {
    ptr: NonNull<sys::sqfs_frag_table_t>,
}

impl FragTable {
    pub fn new() -> SqResult<Self> {
        let p = unsafe { sys::sqfs_frag_table_create(0) };
        Ok(FragTable {
            ptr: nonnull(p, "creating the fragment table")?,
        })
    }

    pub fn write(&self, file: &SqFile, sup: &mut Super, cmp: &Compressor) -> SqResult<()> {
        check(
            unsafe { sys::sqfs_frag_table_write(self.ptr.as_ptr(), file.raw(), sup, cmp.raw()) },
            "writing the fragment table",
        )
    }
}

impl Drop for FragTable {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}

/// The data block processor: splits files into blocks, compresses them on
/// worker threads, deduplicates, packs tail ends into fragment blocks.
///
/// It fills in the inodes of the files it is given asynchronously; it owns
/// them until [`BlockProcessor::sync`] hands back the completed ones.
pub struct BlockProcessor {
    ptr: NonNull<sys::sqfs_block_processor_t>,
    /// Inodes the worker side may still write to. Boxed on purpose: the
    /// processor keeps the address of each cell, which must not move when
    /// the vector grows.
    #[allow(clippy::vec_box)]
    pending: Vec<Box<*mut sys::sqfs_inode_generic_t>>,
    in_file: bool,
    appended: u64,
    _deps: ProcessorDeps,
}

/// What a block processor points to: compressor, decompressor (fragment
/// dedup check), block writer, fragment table, image file.
type ProcessorDeps = (
    Rc<Compressor>,
    Rc<Compressor>,
    Rc<BlockWriter>,
    Rc<FragTable>,
    Rc<SqFile>,
);

impl BlockProcessor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        block_size: u32,
        workers: u32,
        backlog: u32,
        cmp: Rc<Compressor>,
        uncmp: Rc<Compressor>,
        wr: Rc<BlockWriter>,
        frag: Rc<FragTable>,
        file: Rc<SqFile>,
    ) -> SqResult<Self> {
        let desc = sys::sqfs_block_processor_desc_t {
            size: std::mem::size_of::<sys::sqfs_block_processor_desc_t>() as u32,
            max_block_size: block_size,
            num_workers: workers,
            max_backlog: backlog,
            cmp: cmp.raw(),
            wr: wr.ptr.as_ptr(),
            tbl: frag.ptr.as_ptr(),
            file: file.raw(),
            uncmp: uncmp.raw(),
        };
        let mut out = ptr::null_mut();
        check(
            unsafe { sys::sqfs_block_processor_create_ex(&desc, &mut out) },
            "creating the block processor",
        )?;
        Ok(BlockProcessor {
            ptr: nonnull(out, "creating the block processor")?,
            pending: Vec::new(),
            in_file: false,
            appended: 0,
            _deps: (cmp, uncmp, wr, frag, file),
        })
    }

    pub fn begin_file(&mut self) -> SqResult<()> {
        let mut cell: Box<*mut sys::sqfs_inode_generic_t> = Box::new(ptr::null_mut());
        let cell_ptr: *mut *mut sys::sqfs_inode_generic_t = &mut *cell;
        check(
            unsafe {
                sys::sqfs_block_processor_begin_file(
                    self.ptr.as_ptr(),
                    cell_ptr,
                    ptr::null_mut(),
                    0,
                )
            },
            "starting a file",
        )?;
        // The processor keeps `cell_ptr`; the box's heap cell never moves.
        self.pending.push(cell);
        self.in_file = true;
        self.appended = 0;
        Ok(())
    }

    pub fn append(&mut self, data: &[u8]) -> SqResult<()> {
        self.appended += data.len() as u64;
        check(
            unsafe {
                sys::sqfs_block_processor_append(
                    self.ptr.as_ptr(),
                    data.as_ptr() as *const c_void,
                    data.len(),
                )
            },
            "adding file data",
        )
    }

    /// End the current file. An empty file's inode is complete at once and
    /// returned; otherwise it stays pending until [`BlockProcessor::sync`].
    pub fn end_file(&mut self) -> SqResult<Option<Inode>> {
        check(
            unsafe { sys::sqfs_block_processor_end_file(self.ptr.as_ptr()) },
            "ending a file",
        )?;
        self.in_file = false;
        if self.appended == 0 {
            // No block refers to it: nothing was enqueued for this file.
            let cell = self.pending.pop().expect("pending inode");
            let p = *cell;
            return Inode::from_raw(p, "empty file inode").map(Some);
        }
        Ok(None)
    }

    /// Wait for every queued block; return the pending inodes, completed,
    /// in the order their files were begun.
    pub fn sync(&mut self) -> SqResult<Vec<Inode>> {
        check(
            unsafe { sys::sqfs_block_processor_sync(self.ptr.as_ptr()) },
            "writing data blocks",
        )?;
        self.take_pending()
    }

    /// Flush the last fragment block; afterwards nothing refers to inodes any more.
    pub fn finish(&mut self) -> SqResult<Vec<Inode>> {
        check(
            unsafe { sys::sqfs_block_processor_finish(self.ptr.as_ptr()) },
            "writing the last data blocks",
        )?;
        self.take_pending()
    }

    fn take_pending(&mut self) -> SqResult<Vec<Inode>> {
        assert!(!self.in_file, "sync inside a file");
        let mut out = Vec::with_capacity(self.pending.len());
        let mut err = None;
        for cell in self.pending.drain(..) {
            match Inode::from_raw(*cell, "file inode") {
                Ok(i) => out.push(i),
                Err(e) => err = Some(e),
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl Drop for BlockProcessor {
    fn drop(&mut self) {
        // Stop the workers first; only then free the inodes they may touch.
        unsafe { destroy(self.ptr.as_ptr()) };
        for cell in self.pending.drain(..) {
            unsafe { sys::sqfs_free(*cell as *mut c_void) };
        }
    }
}

pub struct IdTable {
    ptr: NonNull<sys::sqfs_id_table_t>,
}

impl IdTable {
    pub fn new() -> SqResult<Self> {
        let p = unsafe { sys::sqfs_id_table_create(0) };
        Ok(IdTable {
            ptr: nonnull(p, "creating the id table")?,
        })
    }

    pub fn index(&mut self, id: u32) -> SqResult<u16> {
        let mut out = 0;
        check(
            unsafe { sys::sqfs_id_table_id_to_index(self.ptr.as_ptr(), id, &mut out) },
            "adding an id to the id table",
        )?;
        Ok(out)
    }

    pub fn id(&self, index: u16) -> SqResult<u32> {
        let mut out = 0;
        check(
            unsafe { sys::sqfs_id_table_index_to_id(self.ptr.as_ptr(), index, &mut out) },
            "looking up an id",
        )?;
        Ok(out)
    }

    pub fn write(&self, file: &SqFile, sup: &mut Super, cmp: &Compressor) -> SqResult<()> {
        check(
            unsafe { sys::sqfs_id_table_write(self.ptr.as_ptr(), file.raw(), sup, cmp.raw()) },
            "writing the id table",
        )
    }

    pub fn read(file: &SqFile, sup: &Super, cmp: &Compressor) -> SqResult<Self> {
        let t = IdTable::new()?;
        check(
            unsafe { sys::sqfs_id_table_read(t.ptr.as_ptr(), file.raw(), sup, cmp.raw()) },
            "reading the id table",
        )?;
        Ok(t)
    }
}

impl Drop for IdTable {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}

pub struct XattrWriter {
    ptr: NonNull<sys::sqfs_xattr_writer_t>,
}

impl XattrWriter {
    pub fn new() -> SqResult<Self> {
        let p = unsafe { sys::sqfs_xattr_writer_create(0) };
        Ok(XattrWriter {
            ptr: nonnull(p, "creating the xattr writer")?,
        })
    }

    /// Store one set of `(key, value)` pairs (keys with a supported prefix,
    /// no NUL inside); returns its index.
    pub fn add_set(&mut self, pairs: &[(std::ffi::CString, Vec<u8>)]) -> SqResult<u32> {
        check(
            unsafe { sys::sqfs_xattr_writer_begin(self.ptr.as_ptr(), 0) },
            "starting an xattr set",
        )?;
        for (k, v) in pairs {
            check(
                unsafe {
                    sys::sqfs_xattr_writer_add(
                        self.ptr.as_ptr(),
                        k.as_ptr(),
                        v.as_ptr() as *const c_void,
                        v.len(),
                    )
                },
                "adding an xattr",
            )?;
        }
        let mut idx = 0;
        check(
            unsafe { sys::sqfs_xattr_writer_end(self.ptr.as_ptr(), &mut idx) },
            "ending an xattr set",
        )?;
        Ok(idx)
    }

    pub fn flush(&self, file: &SqFile, sup: &mut Super, cmp: &Compressor) -> SqResult<()> {
        check(
            unsafe { sys::sqfs_xattr_writer_flush(self.ptr.as_ptr(), file.raw(), sup, cmp.raw()) },
            "writing the xattr table",
        )
    }
}

impl Drop for XattrWriter {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}

/// Writes metadata blocks (inode or directory table) straight into a file.
pub struct MetaWriter {
    ptr: NonNull<sys::sqfs_meta_writer_t>,
    _deps: (Rc<SqFile>, Rc<Compressor>),
}

impl MetaWriter {
    pub fn new(file: Rc<SqFile>, cmp: Rc<Compressor>) -> SqResult<Self> {
        let p = unsafe { sys::sqfs_meta_writer_create(file.raw(), cmp.raw(), 0) };
        Ok(MetaWriter {
            ptr: nonnull(p, "creating a metadata writer")?,
            _deps: (file, cmp),
        })
    }

    /// Where the next byte goes: `(block << 16) | offset`, relative to the table start.
    pub fn position(&self) -> u64 {
        let mut block = 0;
        let mut offset = 0;
        unsafe { sys::sqfs_meta_writer_get_position(self.ptr.as_ptr(), &mut block, &mut offset) };
        (block << 16) | offset as u64
    }

    /// Append an inode; returns its reference.
    pub fn write_inode(&mut self, inode: &Inode) -> SqResult<u64> {
        let r = self.position();
        check(
            unsafe { sys::sqfs_meta_writer_write_inode(self.ptr.as_ptr(), inode.ptr.as_ptr()) },
            "writing an inode",
        )?;
        Ok(r)
    }

    pub fn flush(&mut self) -> SqResult<()> {
        check(
            unsafe { sys::sqfs_meta_writer_flush(self.ptr.as_ptr()) },
            "flushing a metadata block",
        )
    }
}

impl Drop for MetaWriter {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}

pub struct DirWriter {
    ptr: NonNull<sys::sqfs_dir_writer_t>,
    _dm: Rc<RefCell<MetaWriter>>,
}

impl DirWriter {
    pub fn new(dm: Rc<RefCell<MetaWriter>>) -> SqResult<Self> {
        let p = unsafe { sys::sqfs_dir_writer_create(dm.borrow().ptr.as_ptr(), 0) };
        Ok(DirWriter {
            ptr: nonnull(p, "creating the directory writer")?,
            _dm: dm,
        })
    }

    /// Write one directory listing (entries sorted by name bytes) and return
    /// its directory inode (nlink, parent, xattr set by the caller).
    pub fn write_dir(
        &mut self,
        entries: &mut dyn Iterator<Item = (&CStr, u32, u64, u16)>,
        xattr: u32,
        parent: u32,
    ) -> SqResult<Inode> {
        check(
            unsafe { sys::sqfs_dir_writer_begin(self.ptr.as_ptr(), 0) },
            "starting a directory",
        )?;
        for (name, inum, iref, mode) in entries {
            check(
                unsafe {
                    sys::sqfs_dir_writer_add_entry(
                        self.ptr.as_ptr(),
                        name.as_ptr(),
                        inum,
                        iref,
                        mode,
                    )
                },
                "adding a directory entry",
            )?;
        }
        check(
            unsafe { sys::sqfs_dir_writer_end(self.ptr.as_ptr()) },
            "writing a directory",
        )?;
        let p = unsafe { sys::sqfs_dir_writer_create_inode(self.ptr.as_ptr(), 0, xattr, parent) };
        Inode::from_raw(p, "creating a directory inode")
    }
}

impl Drop for DirWriter {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}

// ---------------------------------------------------------------- readers

/// The inode and directory tables of an image, read through two metadata
/// readers (each caches its current block).
pub struct MetaTables {
    inodes: NonNull<sys::sqfs_meta_reader_t>,
    dirs: NonNull<sys::sqfs_meta_reader_t>,
    sup: Rc<Super>,
    _deps: (Rc<Compressor>, Rc<SqFile>),
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
        let inodes = unsafe {
            sys::sqfs_meta_reader_create(
                file.raw(),
                cmp.raw(),
                sup.inode_table_start,
                sup.directory_table_start,
            )
        };
        let inodes = nonnull(inodes, "creating the inode table reader")?;
        let dirs = unsafe {
            sys::sqfs_meta_reader_create(
                file.raw(),
                cmp.raw(),
                sup.directory_table_start,
                dir_limit,
            )
        };
        let dirs = match nonnull(dirs, "creating the directory table reader") {
            Ok(d) => d,
            Err(e) => {
                unsafe { destroy(inodes.as_ptr()) };
                return Err(e);
            }
        };
        Ok(MetaTables {
            inodes,
            dirs,
            sup,
            _deps: (cmp, file),
        })
    }

    /// The inode at reference `iref` (`block << 16 | offset` in the inode table).
    pub fn inode(&mut self, iref: u64) -> SqResult<Inode> {
        let mut out = ptr::null_mut();
        check(
            unsafe {
                sys::sqfs_meta_reader_read_inode(
                    self.inodes.as_ptr(),
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
        let mut out = Vec::new();
        loop {
            let mut ent: *mut sys::sqfs_dir_entry_t = ptr::null_mut();
            let mut inum = 0;
            let mut iref = 0;
            let ret = unsafe {
                sys::sqfs_meta_reader_readdir(
                    self.dirs.as_ptr(),
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

impl Drop for MetaTables {
    fn drop(&mut self) {
        unsafe {
            destroy(self.inodes.as_ptr());
            destroy(self.dirs.as_ptr());
        }
    }
}

pub struct DataReader {
    ptr: NonNull<sys::sqfs_data_reader_t>,
    _deps: (Rc<Compressor>, Rc<SqFile>),
}

impl DataReader {
    pub fn new(sup: &Super, cmp: Rc<Compressor>, file: Rc<SqFile>) -> SqResult<Self> {
        let p = unsafe {
            sys::sqfs_data_reader_create(file.raw(), sup.block_size as usize, cmp.raw(), 0)
        };
        let r = DataReader {
            ptr: nonnull(p, "creating the data reader")?,
            _deps: (cmp, file),
        };
        check(
            unsafe { sys::sqfs_data_reader_load_fragment_table(r.ptr.as_ptr(), sup) },
            "loading the fragment table",
        )?;
        Ok(r)
    }

    /// Read up to `buf.len()` bytes of a file at `offset`; returns the count.
    pub fn read(&mut self, inode: &Inode, offset: u64, buf: &mut [u8]) -> SqResult<usize> {
        let ret = unsafe {
            sys::sqfs_data_reader_read(
                self.ptr.as_ptr(),
                inode.ptr.as_ptr(),
                offset,
                buf.as_mut_ptr() as *mut c_void,
                buf.len().min(u32::MAX as usize) as u32,
            )
        };
        check(ret, "reading file data")?;
        Ok(ret as usize)
    }
}

impl Drop for DataReader {
    fn drop(&mut self) {
        unsafe { destroy(self.ptr.as_ptr()) }
    }
}

pub struct XattrReader {
    ptr: NonNull<sys::sqfs_xattr_reader_t>,
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
        check(
            unsafe { sys::sqfs_xattr_reader_seek_kv(xr, &desc) },
            "seeking to xattrs",
        )?;
        let mut out = Vec::with_capacity(desc.count as usize);
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
