//! Python functions for snap-pack: pack, unpack, list_image.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use snap_core::Progress;
use snap_pack::{PackOptions, Selection, UnpackOptions, UnsupportedXattrs};

use crate::errors::IntoPy;
use crate::progress::sink;

/// `str`, `bytes` or `os.PathLike` → raw OS bytes (str via the file system
/// encoding with surrogateescape, so non-UTF-8 names survive).
fn os_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let os = obj.py().import("os")?;
    let fsenc = os.call_method1("fsencode", (obj,))?;
    Ok(fsenc.cast::<PyBytes>()?.as_bytes().to_vec())
}

fn path_arg(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    Ok(PathBuf::from(OsString::from_vec(os_bytes(obj)?)))
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// Pack the directory tree `src` into a new SquashFS image `image`.
#[pyfunction]
#[pyo3(signature = (src, image, compressor="zstd", level=None, block_size=131072, threads=None,
    select_depth=None, select_names=None, progress=None, skip_unsupported_xattrs=false))]
#[allow(clippy::too_many_arguments)]
fn pack<'py>(
    py: Python<'py>,
    src: &Bound<'py, PyAny>,
    image: &Bound<'py, PyAny>,
    compressor: &str,
    level: Option<u32>,
    block_size: u32,
    threads: Option<usize>,
    select_depth: Option<usize>,
    select_names: Option<Vec<Bound<'py, PyAny>>>,
    progress: Option<Py<PyAny>>,
    skip_unsupported_xattrs: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let src = path_arg(src)?;
    let image = path_arg(image)?;
    let selection = match (select_depth, select_names) {
        (None, None) => None,
        (Some(depth), Some(names)) => Some(Selection {
            depth,
            names: names
                .iter()
                .map(|n| os_bytes(n).map(OsString::from_vec))
                .collect::<PyResult<BTreeSet<_>>>()?,
        }),
        _ => {
            return Err(snap_core::Error::invalid_input(
                "select_depth and select_names go together",
            ))
            .py();
        }
    };
    let opts = PackOptions {
        compressor: compressor.parse().py()?,
        level,
        block_size,
        threads,
        selection,
        unsupported_xattrs: if skip_unsupported_xattrs {
            UnsupportedXattrs::Skip
        } else {
            UnsupportedXattrs::Refuse
        },
        ..PackOptions::default()
    };
    let p = Progress::new("pack", None, sink(progress));
    let s = py
        .detach(|| snap_pack::pack(&src, &image, &opts, &p))
        .py()?;
    let d = PyDict::new(py);
    d.set_item("dirs", s.dirs)?;
    d.set_item("files", s.files)?;
    d.set_item("inodes", s.inodes)?;
    d.set_item("hardlinks", s.hardlinks)?;
    d.set_item("symlinks", s.symlinks)?;
    d.set_item("specials", s.specials)?;
    d.set_item("xattr_entries", s.xattr_entries)?;
    d.set_item("skipped_xattrs", s.skipped_xattrs)?;
    d.set_item("clamped_mtimes", s.clamped_mtimes)?;
    d.set_item("bytes_in", s.bytes_in)?;
    d.set_item("sparse_files", s.sparse_files)?;
    d.set_item("hole_bytes", s.hole_bytes)?;
    d.set_item("image_size", s.image_size)?;
    d.set_item("duration", secs(s.duration))?;
    Ok(d)
}

/// Extract `image` (or the paths in `select`) into `dest` (empty or new).
#[pyfunction]
#[pyo3(signature = (image, dest, select=None, apply_fake_super=false, progress=None))]
fn unpack<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    dest: &Bound<'py, PyAny>,
    select: Option<Vec<Bound<'py, PyAny>>>,
    apply_fake_super: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let image = path_arg(image)?;
    let dest = path_arg(dest)?;
    let opts = UnpackOptions {
        select: select
            .unwrap_or_default()
            .iter()
            .map(os_bytes)
            .collect::<PyResult<_>>()?,
        apply_fake_super,
        keep_fake_super_xattr: false,
        present: None,
    };
    let p = Progress::new("unpack", None, sink(progress));
    let s = py
        .detach(|| snap_pack::unpack(&image, &dest, &opts, &p))
        .py()?;
    let d = PyDict::new(py);
    d.set_item("dirs", s.dirs)?;
    d.set_item("files", s.files)?;
    d.set_item("hardlinks", s.hardlinks)?;
    d.set_item("symlinks", s.symlinks)?;
    d.set_item("specials", s.specials)?;
    d.set_item("skipped_devices", s.skipped_devices)?;
    d.set_item("fake_super_applied", s.fake_super_applied)?;
    d.set_item("skipped_xattrs", s.skipped_xattrs)?;
    d.set_item("bytes_out", s.bytes_out)?;
    d.set_item("duration", secs(s.duration))?;
    Ok(d)
}

/// Entries of `image` below `prefix` (raw bytes), `depth` levels deep.
#[pyfunction]
#[pyo3(signature = (image, prefix=None, depth=1), text_signature = "(image, prefix=b'', depth=1)")]
fn list_image<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    prefix: Option<&Bound<'py, PyAny>>,
    depth: usize,
) -> PyResult<Bound<'py, PyList>> {
    let image = path_arg(image)?;
    let prefix = match prefix {
        Some(p) => os_bytes(p)?,
        None => Vec::new(),
    };
    let entries = py.detach(|| snap_pack::list(&image, &prefix, depth)).py()?;
    let out = PyList::empty(py);
    for e in entries {
        let d = PyDict::new(py);
        d.set_item("path", PyBytes::new(py, &e.path))?;
        d.set_item("kind", e.kind.name())?;
        d.set_item("mode", e.mode)?;
        d.set_item("uid", e.uid)?;
        d.set_item("gid", e.gid)?;
        d.set_item("mtime", e.mtime)?;
        d.set_item("size", e.size)?;
        d.set_item("nlink", e.nlink)?;
        d.set_item("inode", e.inode)?;
        d.set_item(
            "symlink_target",
            e.symlink_target.as_deref().map(|t| PyBytes::new(py, t)),
        )?;
        d.set_item("rdev", e.rdev)?;
        out.append(d)?;
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(unpack, m)?)?;
    m.add_function(wrap_pyfunction!(list_image, m)?)?;
    Ok(())
}
