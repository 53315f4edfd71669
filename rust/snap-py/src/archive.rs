//! The archive pipeline (backup server).

use std::path::PathBuf;

use pyo3::prelude::*;
use snap_archive::ArchiveConfig;
use snap_core::config::JsonConfig;

use crate::conv::to_python;
use crate::errors::IntoPy;

/// Check an archive configuration given as JSON text; returns it with defaults filled in.
#[pyfunction]
fn parse_archive_config<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, &ArchiveConfig::from_json(text).py()?)
}

/// Run the archive pipeline with the configuration at `config`; returns the
/// record of the run (its manifest inside). Raises on failure (the failed
/// run is recorded under state_dir too).
#[pyfunction]
#[pyo3(signature = (config, progress = None))]
fn archive_run<'py>(
    py: Python<'py>,
    config: PathBuf,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = ArchiveConfig::load(&config).py()?;
    let sink = crate::progress::sink(progress);
    let rec = py.detach(|| snap_archive::archive(&cfg, sink)).py()?;
    to_python(py, &rec)
}

/// The snapshots (and the servers in each) of a history root.
#[pyfunction]
#[pyo3(signature = (history, servers = None))]
fn history_inventory<'py>(
    py: Python<'py>,
    history: PathBuf,
    servers: Option<Vec<String>>,
) -> PyResult<Bound<'py, PyAny>> {
    to_python(
        py,
        &snap_archive::inventory(&history, servers.as_deref()).py()?,
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_archive_config, m)?)?;
    m.add_function(wrap_pyfunction!(archive_run, m)?)?;
    m.add_function(wrap_pyfunction!(history_inventory, m)?)?;
    Ok(())
}
