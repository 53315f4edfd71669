#![forbid(unsafe_code)]
//! Regular files' data, written on threads of their own.
//!
//! Extraction is two kinds of work: creating entries (directories, hard
//! links, symlinks: system calls on names) and filling regular files
//! (reading, decompressing and writing their blocks). The extractor creates
//! each file (`O_EXCL`, in a directory it made) and hands the open
//! descriptor here with the file's metadata; a writer, with an image reader
//! of its own on the same open file, writes the data and then applies
//! owner, xattrs, mode and times, as the extractor would have. Filling is
//! most of the work (three quarters of the CPU on a tree of small files,
//! /usr/share), so there are [`writers`] of them, taking files from one
//! queue. Nothing here resolves a name: a writer only writes through
//! descriptors it was given. The queue is bounded, so at most [`jobs`] files
//! wait, open.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use snap_core::{Error, Progress, Result};

use super::apply::{Apply, Attrs};
use super::data::is_zero;
use super::frags::SharedFrags;
use super::image::Image;
use crate::ffi::{Present, SqFile};
use crate::util::io_err;

/// Zero pages of restored files are left as holes.
const PAGE: usize = 4096;

/// Files that may wait for the writers, each an open descriptor: 64, or a
/// sixteenth of the descriptors this process may open if that is fewer.
pub(super) fn jobs() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(64, |n| (n / 16).clamp(1, 64) as usize)
}

/// Writers: one per core, at most [`MAX_WRITERS`] (each holds an image
/// reader of its own without tables, and a block; the fragment cache is
/// the extractor's, shared).
pub(super) fn writers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WRITERS))
}

/// The most writers, whatever the cores: past this the extractor (one
/// thread) and the file system are the limit.
pub(super) const MAX_WRITERS: usize = 4;

/// A file whose xattrs take more than this is written by the extractor
/// itself, not queued: what waits in the queue stays small (64 files of at
/// most 64 KiB of xattrs) whatever a hostile image's xattr sets weigh.
pub(super) const QUEUED_XATTRS_MAX: usize = 64 << 10;

/// A created regular file to fill and finish.
pub(super) struct Job {
    pub(super) file: File,
    pub(super) iref: u64,
    pub(super) size: u64,
    /// Its tail's fragment block, `(image offset, size word)`: writers
    /// read no fragment table.
    pub(super) fragment: Option<(u64, u32)>,
    /// Its path under the destination, for messages.
    pub(super) rel: Vec<u8>,
    pub(super) attrs: Attrs,
}

/// What a writer needs besides its jobs.
pub(super) struct Writer<'a> {
    /// The image, open (a duplicate of the extractor's descriptor), its size.
    pub(super) image: File,
    pub(super) len: u64,
    /// The bytes of the image there are to read, when not all.
    pub(super) present: Option<Arc<Present>>,
    /// Names the image in messages.
    pub(super) image_path: &'a Path,
    /// Finishes the files (a fresh copy of the extractor's).
    pub(super) apply: Apply,
    /// The extractor's fragment cache, shared.
    pub(super) frags: SharedFrags,
    pub(super) progress: &'a Progress,
}

/// What the writers share: the flag that stops them all, and the first
/// error (in time: the one that caused the stop, not the others it may
/// have caused).
#[derive(Default)]
pub(super) struct Stop {
    flag: AtomicBool,
    first: Mutex<Option<Error>>,
}

impl Stop {
    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    fn fail(&self, e: Error) {
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
        self.flag.store(true, Ordering::Relaxed);
    }

    /// The first error a writer met, if any.
    pub(super) fn into_error(self) -> Option<Error> {
        self.first.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// Raises `stop` when its writer unwinds from a panic: the others stop
/// too (the panic itself is reported by the join).
struct OnPanic<'a>(&'a Stop);

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.flag.store(true, Ordering::Relaxed);
        }
    }
}

impl Writer<'_> {
    /// Fill and finish jobs from the shared queue until the extractor
    /// hangs up or `stop` is raised. An error goes to `stop` and raises it:
    /// every writer then returns and drops its hold on the queue, so the
    /// extractor's next hand-over fails. Returns the xattrs it was not
    /// allowed to set.
    pub(super) fn run(self, jobs: Arc<Mutex<Receiver<Job>>>, stop: &Stop) -> u64 {
        let _guard = OnPanic(stop);
        match self.fill(&jobs, stop) {
            Ok(skipped) => skipped,
            Err(e) => {
                stop.fail(e);
                0
            }
        }
    }

    fn fill(mut self, jobs: &Mutex<Receiver<Job>>, stop: &Stop) -> Result<u64> {
        let mut img = Image::open_data(
            Rc::new(SqFile::with_present(self.image, self.len, self.present)),
            self.image_path,
            self.frags,
        )?;
        while !stop.is_set() {
            // The lock is held only around `recv` (nothing in it panics).
            let Ok(Ok(job)) = jobs.lock().map(|rx| rx.recv()) else {
                break;
            };
            write_data(
                &mut img,
                self.progress,
                &self.apply,
                &job.file,
                (job.iref, job.fragment),
                job.size,
                &job.rel,
            )?;
            self.apply
                .finish_fd(&OwnedFd::from(job.file), &job.attrs, &job.rel)?;
        }
        Ok(self.apply.skipped_xattrs)
    }
}

/// Write the data of the file at `iref` of `img` (its fragment block at
/// `fragment`) into `f`, keeping holes: holes and all-zero pages are
/// skipped, then the size is set (unless the last byte written ends the
/// file there already: `f` is new and empty, and most files end in data).
pub(super) fn write_data(
    img: &mut Image,
    progress: &Progress,
    apply: &Apply,
    f: &File,
    (iref, fragment): (u64, Option<(u64, u32)>),
    size: u64,
    rel: &[u8],
) -> Result<()> {
    let target = apply.target(rel);
    let mut written = 0u64;
    // Where the data written last ends.
    let mut end = 0u64;
    img.file_data_with(iref, rel, fragment, &mut |off, data| {
        progress.add(data.len() as u64);
        written += data.len() as u64;
        // Write the non-zero pages only: zeros stay holes.
        let mut start = None;
        for (i, page) in data.chunks(PAGE).enumerate() {
            match (is_zero(page), start) {
                (false, None) => start = Some(i * PAGE),
                (true, Some(s)) => {
                    f.write_all_at(&data[s..i * PAGE], off + s as u64)
                        .map_err(|e| io_err("writing", &target, e))?;
                    end = off + (i * PAGE) as u64;
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            f.write_all_at(&data[s..], off + s as u64)
                .map_err(|e| io_err("writing", &target, e))?;
            end = off + data.len() as u64;
        }
        Ok(())
    })?;
    if end != size {
        f.set_len(size).map_err(|e| io_err("writing", &target, e))?;
    }
    progress.add(size - written.min(size));
    Ok(())
}
