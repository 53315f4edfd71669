//! The push (servers) and rotation (backup server).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use snap_core::Progress;
use snap_core::config::JsonConfig;
use snap_core::push::{self, PushConfig, PushOptions};
use snap_core::rotate::{self, ServerConfig};

use crate::conv::to_python;
use crate::errors::IntoPy;

/// Check a push configuration file; returns it as a dict.
#[pyfunction]
fn load_push_config<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, &PushConfig::load(&path).py()?)
}

/// Check a push configuration given as JSON text; returns it with defaults filled in.
#[pyfunction]
fn parse_push_config<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, &PushConfig::from_json(text).py()?)
}

/// Run one push with the configuration at `config`; returns its record.
#[pyfunction]
#[pyo3(signature = (config, no_splay = false, lock_wait = 0.0, progress = None))]
fn push_run<'py>(
    py: Python<'py>,
    config: PathBuf,
    no_splay: bool,
    lock_wait: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = PushConfig::load(&config).py()?;
    let opts = PushOptions {
        no_splay,
        lock_wait: Duration::from_secs_f64(lock_wait.max(0.0)),
    };
    let sink = crate::progress::sink(progress);
    let rec = py
        .detach(|| {
            let progress = Progress::new("push", None, sink);
            push::push(&cfg, &opts, &progress)
        })
        .py()?;
    to_python(py, &rec)
}

/// Check a backup server configuration file; returns it as a dict.
#[pyfunction]
fn load_server_config<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, &ServerConfig::load(&path).py()?)
}

/// Check a backup server configuration given as JSON text; returns it with defaults filled in.
#[pyfunction]
fn parse_server_config<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, &ServerConfig::from_json(text).py()?)
}

/// The rsnapshot configuration for a backup server configuration (JSON text).
#[pyfunction]
fn rsnapshot_conf(text: &str) -> PyResult<String> {
    Ok(ServerConfig::from_json(text).py()?.rsnapshot_conf())
}

/// Rotate retention `level` (syncing complete pushes first for the lowest).
#[pyfunction]
fn rotate_run<'py>(py: Python<'py>, config: PathBuf, level: String) -> PyResult<Bound<'py, PyAny>> {
    let cfg = ServerConfig::load(&config).py()?;
    let rec = py.detach(|| rotate::rotate(&cfg, &level)).py()?;
    to_python(py, &rec)
}

/// Make or repair the jail of a push account; returns what changed (or,
/// with `dry_run`, what would).
#[pyfunction]
#[pyo3(signature = (jails_dir, account, uid, gid, dry_run = false))]
fn prepare_jail(
    jails_dir: PathBuf,
    account: &str,
    uid: u32,
    gid: u32,
    dry_run: bool,
) -> PyResult<Vec<String>> {
    snap_core::jail::prepare(&jails_dir, account, uid, gid, dry_run).py()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prepare_jail, m)?)?;
    m.add_function(wrap_pyfunction!(load_push_config, m)?)?;
    m.add_function(wrap_pyfunction!(parse_push_config, m)?)?;
    m.add_function(wrap_pyfunction!(parse_server_config, m)?)?;
    m.add_function(wrap_pyfunction!(rsnapshot_conf, m)?)?;
    m.add_function(wrap_pyfunction!(push_run, m)?)?;
    m.add_function(wrap_pyfunction!(load_server_config, m)?)?;
    m.add_function(wrap_pyfunction!(rotate_run, m)?)?;
    Ok(())
}
