//! Python functions for chains (snap-pack's `chain`): link, assemble,
//! rebuild_index, snapshot names.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use snap_core::{Error, Progress};
use snap_pack::chain::{self, ImageSource, LinkRecord, Range};
use snap_pack::{PackOptions, Selection};

use crate::conv::to_python;
use crate::errors::IntoPy;
use crate::progress::sink;

fn path_arg(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let os = obj.py().import("os")?;
    let b = os.call_method1("fsencode", (obj,))?;
    Ok(PathBuf::from(OsString::from_vec(
        b.cast::<PyBytes>()?.as_bytes().to_vec(),
    )))
}

fn fsdecode<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    py.import("os")?
        .call_method1("fsdecode", (PyBytes::new(py, raw),))
}

fn options(
    compressor: &str,
    level: Option<u32>,
    block_size: u32,
    threads: Option<usize>,
    servers: Option<Vec<String>>,
) -> PyResult<PackOptions> {
    Ok(PackOptions {
        compressor: compressor.parse().py()?,
        level,
        block_size,
        threads,
        selection: servers.map(|s| Selection {
            depth: 2,
            names: s.into_iter().map(Into::into).collect(),
        }),
        ..PackOptions::default()
    })
}

fn from_json<T: serde::de::DeserializeOwned>(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    let text: String = obj
        .py()
        .import("json")?
        .call_method1("dumps", (obj,))?
        .extract()?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid_input(format!("{what}: {e}")))
        .py()
}

fn superblock_arg(b: &[u8]) -> PyResult<[u8; 96]> {
    b.try_into()
        .map_err(|_| Error::invalid_input(format!("a super block is 96 bytes, not {}", b.len())))
        .py()
}

/// Start a chain (`start=True`: its base) or add a link: writes the tail to
/// the new file `tail`; with `commit` the chain index `index` is replaced.
#[pyfunction]
#[pyo3(signature = (history, index, tail, start=false, compressor="zstd", level=None,
    block_size=131072, threads=None, servers=None, commit=true, progress=None))]
#[allow(clippy::too_many_arguments)]
fn chain_link<'py>(
    py: Python<'py>,
    history: &Bound<'py, PyAny>,
    index: &Bound<'py, PyAny>,
    tail: &Bound<'py, PyAny>,
    start: bool,
    compressor: &str,
    level: Option<u32>,
    block_size: u32,
    threads: Option<usize>,
    servers: Option<Vec<String>>,
    commit: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let (history, index, tail) = (path_arg(history)?, path_arg(index)?, path_arg(tail)?);
    let opts = options(compressor, level, block_size, threads, servers)?;
    let p = Progress::new("link", None, sink(progress));
    let mut l = py
        .detach(|| chain::link(&history, &index, start, &tail, &opts, &p))
        .py()?;
    if commit {
        py.detach(|| l.commit()).py()?;
    }
    let d = PyDict::new(py);
    d.set_item("number", l.number)?;
    d.set_item("tail", fsdecode(py, l.tail.as_os_str().as_bytes())?)?;
    d.set_item("tail_start", l.tail_start)?;
    d.set_item("superblock", PyBytes::new(py, &l.superblock))?;
    d.set_item("links", to_python(py, &l.links)?)?;
    d.set_item("ranges", to_python(py, &l.ranges)?)?;
    d.set_item("summary", to_python(py, &l.summary)?)?;
    d.set_item("committed", commit)?;
    let snaps = PyList::empty(py);
    for s in &l.snapshots {
        let e = PyDict::new(py);
        e.set_item("dir", fsdecode(py, s.dir.as_bytes())?)?;
        e.set_item("name", &s.name)?;
        e.set_item("time", s.time.0 as f64 + s.time.1 as f64 / 1e9)?;
        e.set_item(
            "source",
            match s.source {
                chain::TimeSource::Stamp => "stamp",
                chain::TimeSource::Mtime => "mtime",
            },
        )?;
        snaps.append(e)?;
    }
    d.set_item("snapshots", snaps)?;
    Ok(d)
}

/// Put the image of `ranges` together at `out` from `tails` (link number →
/// tail path) and `superblock`, checking every range's SHA-256.
#[pyfunction]
fn chain_assemble(
    py: Python<'_>,
    ranges: &Bound<'_, PyAny>,
    superblock: &[u8],
    tails: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
) -> PyResult<u64> {
    let ranges: Vec<Range> = from_json(ranges, "ranges")?;
    let sb = superblock_arg(superblock)?;
    let mut paths: Vec<(u32, PathBuf)> = Vec::new();
    for item in tails.call_method0("items")?.try_iter()? {
        let (n, p): (u32, Bound<'_, PyAny>) = item?.extract()?;
        paths.push((n, path_arg(&p)?));
    }
    let out = path_arg(out)?;
    let lookup = move |n: u32| {
        paths
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| PathBuf::from(format!("<no tail for link {n}>")))
    };
    py.detach(|| chain::assemble(&ranges, &sb, &lookup, &out))
        .py()
}

/// Write the chain index `index` again from the newest image (`image`, or
/// `tail` starting at `tail_start` with `superblock`) and `history`.
#[pyfunction]
#[pyo3(signature = (history, index, links, image=None, tail=None, tail_start=None, superblock=None,
    compressor="zstd", level=None, block_size=131072))]
#[allow(clippy::too_many_arguments)]
fn chain_rebuild_index<'py>(
    py: Python<'py>,
    history: &Bound<'py, PyAny>,
    index: &Bound<'py, PyAny>,
    links: &Bound<'py, PyAny>,
    image: Option<&Bound<'py, PyAny>>,
    tail: Option<&Bound<'py, PyAny>>,
    tail_start: Option<u64>,
    superblock: Option<&[u8]>,
    compressor: &str,
    level: Option<u32>,
    block_size: u32,
) -> PyResult<Bound<'py, PyAny>> {
    let (history, index) = (path_arg(history)?, path_arg(index)?);
    let links: Vec<LinkRecord> = from_json(links, "links")?;
    let opts = options(compressor, level, block_size, None, None)?;
    let image = image.map(path_arg).transpose()?;
    let tail = tail.map(path_arg).transpose()?;
    let sb = superblock.map(superblock_arg).transpose()?;
    let src = match (&image, &tail, tail_start, sb) {
        (Some(i), None, None, None) => ImageSource::Image(i),
        (None, Some(t), Some(start), Some(superblock)) => ImageSource::Tail {
            tail: t,
            start,
            superblock,
        },
        _ => {
            return Err(Error::invalid_input(
                "give image, or tail with tail_start and superblock",
            ))
            .py();
        }
    };
    let sum = py
        .detach(|| chain::rebuild_index(&history, src, &links, &opts, &index))
        .py()?;
    to_python(py, &sum)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(chain_link, m)?)?;
    m.add_function(wrap_pyfunction!(chain_assemble, m)?)?;
    m.add_function(wrap_pyfunction!(chain_rebuild_index, m)?)?;
    Ok(())
}
