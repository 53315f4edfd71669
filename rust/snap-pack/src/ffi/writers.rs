//! Writers: data blocks, fragments, ids, xattrs, metadata, directories.

use std::cell::RefCell;
use std::ffi::{CStr, c_void};
use std::ptr::{self, NonNull};
use std::rc::Rc;

use super::{Compressor, Inode, SqFile, SqResult, Super, check, destroy, nonnull};
use crate::sys;

pub struct BlockWriter {
    pub(super) ptr: NonNull<sys::sqfs_block_writer_t>,
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
    pub(super) ptr: NonNull<sys::sqfs_frag_table_t>,
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

    /// The fragment table of an image.
    pub fn read(file: &SqFile, sup: &Super, cmp: &Compressor) -> SqResult<Self> {
        let t = FragTable::new()?;
        check(
            unsafe { sys::sqfs_frag_table_read(t.ptr.as_ptr(), file.raw(), sup, cmp.raw()) },
            "reading the fragment table",
        )?;
        Ok(t)
    }

    /// Add a fragment block (image offset, on-disk size word); returns its index.
    pub fn append(&self, location: u64, size: u32) -> SqResult<u32> {
        let mut index = 0;
        check(
            unsafe { sys::sqfs_frag_table_append(self.ptr.as_ptr(), location, size, &mut index) },
            "adding a fragment block",
        )?;
        Ok(index)
    }

    /// `(image offset, on-disk size word)` of fragment block `index`.
    pub fn lookup(&self, index: u32) -> SqResult<(u64, u32)> {
        let mut ent = sys::sqfs_fragment_t::default();
        check(
            unsafe { sys::sqfs_frag_table_lookup(self.ptr.as_ptr(), index, &mut ent) },
            "looking up a fragment block",
        )?;
        Ok((ent.start_offset, ent.size))
    }

    pub fn len(&self) -> u32 {
        unsafe { sys::sqfs_frag_table_get_size(self.ptr.as_ptr()) as u32 }
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
    pub(super) ptr: NonNull<sys::sqfs_block_processor_t>,
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

    /// Start a file; `flags`: `SQFS_BLK_*` user flags (0 for the defaults).
    pub fn begin_file(&mut self, flags: u32) -> SqResult<()> {
        let mut cell: Box<*mut sys::sqfs_inode_generic_t> = Box::new(ptr::null_mut());
        let cell_ptr: *mut *mut sys::sqfs_inode_generic_t = &mut *cell;
        check(
            unsafe {
                sys::sqfs_block_processor_begin_file(
                    self.ptr.as_ptr(),
                    cell_ptr,
                    ptr::null_mut(),
                    flags,
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
    pub(super) ptr: NonNull<sys::sqfs_id_table_t>,
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
    pub(super) ptr: NonNull<sys::sqfs_xattr_writer_t>,
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
    pub(super) ptr: NonNull<sys::sqfs_meta_writer_t>,
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

    /// Append raw bytes (an inode serialised by the caller).
    pub fn append(&mut self, data: &[u8]) -> SqResult<()> {
        check(
            unsafe {
                sys::sqfs_meta_writer_append(
                    self.ptr.as_ptr(),
                    data.as_ptr() as *const c_void,
                    data.len(),
                )
            },
            "writing metadata",
        )
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
    pub(super) ptr: NonNull<sys::sqfs_dir_writer_t>,
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
