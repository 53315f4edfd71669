#![forbid(unsafe_code)]
//! Setting up libsquashfs's writers around a walk, and writing the tables
//! and super block after it: for a new image, or for the tail a chain link
//! appends to an image (the same code, with the image's earlier part absent).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use snap_core::{Error, ErrorKind, Progress, Result};

use super::files::{Live, Reuse};
use super::packer::{BACKLOG_PER_THREAD, Packer};
use super::prescan::prescan;
use super::source::Source;
use super::{PackOptions, PackSummary};
use crate::ffi::{
    self, BlockProcessor, BlockWriter, Compressor as SqCompressor, DirWriter, FragTable, IdTable,
    MetaWriter, SqFile, XattrWriter,
};
use crate::layout::on_disk;
use crate::sys;
use crate::util::{io_err, show, sq_err};

/// Where a pack writes.
pub(crate) struct Sink<'a> {
    /// A new image (base 0), or a tail whose base is the image's data end.
    pub image: Rc<SqFile>,
    /// For messages.
    pub path: &'a Path,
    /// Where the inode and directory tables wait until the data is written.
    pub tmp_dir: &'a Path,
    /// Fragment blocks the image already holds (their indices stay).
    pub fragments: &'a [(u64, u32)],
    /// A tail: whether the image's base wrote a compressor options block.
    /// `None`: a new image, which writes its own.
    pub options_written: Option<bool>,
}

/// What [`pack_into`] made.
pub(crate) struct Packed {
    pub sum: PackSummary,
    /// The final super block (also written: in the image, or a tail's head).
    pub sup: ffi::Super,
    /// Where file data begins (after the super block and compressor options).
    pub data_start: u64,
    /// Where file data ends: the inode table's start.
    pub data_end: u64,
    /// Every fragment block of the image, old and new.
    pub fragments: Vec<(u64, u32)>,
    /// With `reuse`: bytes of data and fragment blocks the image's files use.
    pub live_bytes: Option<u64>,
}

/// Check what can be checked of the options; returns the thread count.
pub(crate) fn check_options(opts: &PackOptions) -> Result<u32> {
    let bs = opts.block_size;
    if !(4096..=1 << 20).contains(&bs) || !bs.is_power_of_two() {
        return Err(Error::invalid_input(format!(
            "block size {bs} is not a power of two between 4 KiB and 1 MiB"
        )));
    }
    if let Some(sel) = &opts.selection
        && sel.depth == 0
    {
        return Err(Error::invalid_input("selection depth must be at least 1"));
    }
    let threads = match opts.threads {
        Some(0) => return Err(Error::invalid_input("threads must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(threads.min(256) as u32)
}

/// Walk `source` and write its image into `sink`. With `reuse`, files the
/// image already holds are referenced, and every file is recorded.
pub(crate) fn pack_into<'a>(
    source: &Source<'_>,
    sink: Sink<'a>,
    opts: &'a PackOptions,
    progress: &'a Progress,
    reuse: Option<&'a mut dyn Reuse>,
) -> Result<Packed> {
    let threads = check_options(opts)?;
    let bs = opts.block_size;
    let level = opts.level.unwrap_or(opts.compressor.default_level());
    // Check the compressor settings before scanning a large tree.
    let cmp = Rc::new(
        SqCompressor::new(opts.compressor.id(), bs, Some(level), false).map_err(|e| {
            Error::invalid_input(format!(
                "compressor {} level {level}: {}",
                opts.compressor.name(),
                e.describe()
            ))
        })?,
    );
    let uncmp = Rc::new(
        SqCompressor::new(opts.compressor.id(), bs, Some(level), true)
            .map_err(|e| sq_err(e, &[]))?,
    );
    let scan = prescan(source, opts)?;
    if !scan.listing_inodes {
        progress.set_total(scan.data_bytes);
    }

    let dir = sink.tmp_dir;
    let image = sink.path;
    let itab_file =
        tempfile::tempfile_in(dir).map_err(|e| io_err("creating a temporary file in", dir, e))?;
    let dtab_file =
        tempfile::tempfile_in(dir).map_err(|e| io_err("creating a temporary file in", dir, e))?;
    let image_sq = sink.image.clone();
    let itab = Rc::new(SqFile::new(itab_file, 0));
    let dtab = Rc::new(SqFile::new(dtab_file, 0));
    let files =
        |e: ffi::SqfsError| sq_err(e, &[(&image_sq, image), (&itab, image), (&dtab, image)]);

    let root_meta =
        crate::walk::stat_path(source.root).map_err(|e| io_err("reading", source.root, e))?;
    let mtime = source.root_mtime.unwrap_or(root_meta.mtime);
    let mut sup = ffi::super_init(
        bs,
        mtime.clamp(0, u32::MAX as i64) as u32,
        opts.compressor.id(),
    )
    .map_err(files)?;
    let options = match sink.options_written {
        None => {
            if image_sq.size() != 0 {
                return Err(Error::internal("pack: a new image must start empty"));
            }
            ffi::super_write(&sup, &image_sq).map_err(files)?;
            cmp.write_options(&image_sq).map_err(files)?
        }
        Some(written) => written,
    };
    if options {
        sup.flags |= sys::SQFS_FLAG_COMPRESSOR_OPTIONS as u16;
    }
    let data_start = image_sq.size();
    let frag = Rc::new(FragTable::new().map_err(files)?);
    for &(start, size) in sink.fragments {
        frag.append(start, size).map_err(files)?;
    }
    let bw = Rc::new(BlockWriter::new(image_sq.clone()).map_err(files)?);
    let bp = BlockProcessor::new(
        bs,
        threads,
        threads * BACKLOG_PER_THREAD,
        cmp.clone(),
        uncmp,
        bw,
        frag.clone(),
        image_sq.clone(),
    )
    .map_err(files)?;
    let mcmp = match opts.metadata_level.filter(|l| Some(*l) != opts.level) {
        Some(l) => {
            Rc::new(SqCompressor::new(opts.compressor.id(), bs, Some(l), false).map_err(files)?)
        }
        None => cmp.clone(),
    };
    let im = MetaWriter::new(itab.clone(), mcmp.clone()).map_err(files)?;
    let dm = Rc::new(RefCell::new(
        MetaWriter::new(dtab.clone(), mcmp.clone()).map_err(files)?,
    ));
    let dw = DirWriter::new(dm.clone()).map_err(files)?;

    let chain = reuse.is_some();
    let mut p = Packer {
        opts,
        progress,
        image_path: image,
        image: image_sq.clone(),
        itab: itab.clone(),
        dtab: dtab.clone(),
        cmp: cmp.clone(),
        bp,
        im,
        dw,
        ids: IdTable::new().map_err(files)?,
        xw: XattrWriter::new().map_err(files)?,
        frag: frag.clone(),
        slots: Vec::new(),
        pending_entries: 0,
        links: scan.links,
        listing_inodes: scan.listing_inodes,
        next_inum: 1,
        buf: vec![0u8; bs as usize],
        sum: PackSummary::default(),
        block_size: bs,
        synced: Vec::new(),
        reuse,
        owner: super::packer::NO_OWNER,
        live: chain.then(Live::default),
    };
    let root_ref = p.run(source)?;
    if !p.links.is_empty() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{}: {} hard-linked file(s) lost links during pack; try again",
                show(source.root),
                p.links.len()
            ),
        ));
    }
    let data_end = p.finish_tables(&mut sup, &dm, root_ref)?;
    let mut fragments = Vec::with_capacity(frag.len() as usize);
    for i in 0..frag.len() {
        fragments.push(frag.lookup(i).map_err(files)?);
    }
    let live_bytes = p.live.take().map(|mut live| {
        let frag_bytes: u64 = fragments
            .iter()
            .enumerate()
            .filter(|(i, _)| live.frag_used(*i as u32))
            .map(|(_, f)| on_disk(f.1))
            .sum();
        live.data_bytes() + frag_bytes
    });
    let mut sum = std::mem::take(&mut p.sum);
    sum.image_size = image_sq.size();
    Ok(Packed {
        sum,
        sup,
        data_start,
        data_end,
        fragments,
        live_bytes,
    })
}

impl Packer<'_> {
    /// After the walk: append the inode and directory tables, then the
    /// fragment, id and xattr tables, and write the final super block.
    fn finish_tables(
        &mut self,
        sup: &mut ffi::Super,
        dm: &Rc<RefCell<MetaWriter>>,
        root_ref: u64,
    ) -> Result<u64> {
        self.im.flush().map_err(|e| self.sq(e))?;
        dm.borrow_mut().flush().map_err(|e| self.sq(e))?;
        let data_end = self.image.size();
        sup.inode_table_start = data_end;
        self.append_table(&self.itab.clone())?;
        sup.directory_table_start = self.image.size();
        self.append_table(&self.dtab.clone())?;
        self.frag
            .write(&self.image, sup, &self.cmp)
            .map_err(|e| self.sq(e))?;
        self.ids
            .write(&self.image, sup, &self.cmp)
            .map_err(|e| self.sq(e))?;
        self.xw
            .flush(&self.image, sup, &self.cmp)
            .map_err(|e| self.sq(e))?;
        sup.inode_count = self.next_inum - 1;
        sup.root_inode_ref = root_ref;
        sup.flags &= !(sys::SQFS_FLAG_NO_DUPLICATES as u16);
        sup.bytes_used = self.image.size();
        ffi::super_write(sup, &self.image).map_err(|e| self.sq(e))?;
        // Pad to 4 KiB like mksquashfs, so the image suits loop devices.
        let pad = (4096 - self.image.size() % 4096) % 4096;
        if pad > 0 {
            self.image
                .append(&vec![0u8; pad as usize])
                .map_err(|e| io_err("writing", self.image_path, e))?;
        }
        Ok(data_end)
    }

    fn append_table(&self, table: &SqFile) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        let len = table.size();
        while off < len {
            let n = ((len - off) as usize).min(buf.len());
            std::os::unix::fs::FileExt::read_exact_at(table.file(), &mut buf[..n], off)
                .map_err(|e| io_err("reading back a temporary table for", self.image_path, e))?;
            self.image
                .append(&buf[..n])
                .map_err(|e| io_err("writing", self.image_path, e))?;
            off += n as u64;
        }
        Ok(())
    }
}
