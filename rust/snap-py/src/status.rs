//! Fleet status: the backup server's view of each server, the verdict, metrics.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use snap_core::Error;
use snap_core::config::JsonConfig;
use snap_core::crosscheck::{self, Sources};
use snap_core::report;
use snap_core::rotate::ServerConfig;
use snap_core::status::{self, Observed, Schedule, Thresholds};

use crate::conv::to_python;
use crate::errors::{IntoPy, to_py};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> PyResult<T> {
    serde_json::from_str(text).map_err(|e| to_py(Error::invalid_input(format!("{what}: {e}"))))
}

/// The backup server's view of every server in its configuration.
#[pyfunction]
fn backup_server_view<'py>(py: Python<'py>, config: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let cfg = ServerConfig::load(&config).py()?;
    to_python(py, &py.detach(|| report::backup_server_view(&cfg)).py()?)
}

/// What history holds of servers with no account here any more, by minion
/// id: the newest push of each that went into history.
#[pyfunction]
fn history_without_account<'py>(py: Python<'py>, config: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let cfg = ServerConfig::load(&config).py()?;
    to_python(py, &py.detach(|| report::history_without_account(&cfg)))
}

/// Write the Prometheus textfile metrics of the backup server; returns the text.
#[pyfunction]
#[pyo3(signature = (config, path, now = None))]
fn write_metrics(
    py: Python<'_>,
    config: PathBuf,
    path: PathBuf,
    now: Option<f64>,
) -> PyResult<String> {
    let cfg = ServerConfig::load(&config).py()?;
    let at = now.unwrap_or_else(self::now);
    py.detach(|| report::write_metrics(&cfg, &path, at)).py()
}

/// Judge one server: schedule, observed and thresholds as JSON texts.
#[pyfunction]
#[pyo3(signature = (schedule, observed, now = None, thresholds = None))]
fn assess_status<'py>(
    py: Python<'py>,
    schedule: &str,
    observed: &str,
    now: Option<f64>,
    thresholds: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let schedule: Schedule = from_json("schedule", schedule)?;
    let observed: Observed = from_json("observed", observed)?;
    let limits: Thresholds = match thresholds {
        Some(t) => from_json("thresholds", t)?,
        None => Thresholds::default(),
    };
    let at = now.unwrap_or_else(self::now);
    to_python(py, &status::assess(&schedule, &observed, at, &limits).py()?)
}

/// Cross-check what each server says it pushed, what the backup server says
/// it received and archived, and what the off-site store holds (one JSON text,
/// see `snap_core::crosscheck::Sources`): {findings, compared}.
#[pyfunction]
fn crosscheck_status<'py>(py: Python<'py>, sources: &str) -> PyResult<Bound<'py, PyAny>> {
    let sources: Sources = from_json("sources", sources)?;
    to_python(py, &crosscheck::crosscheck(&sources))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(backup_server_view, m)?)?;
    m.add_function(wrap_pyfunction!(history_without_account, m)?)?;
    m.add_function(wrap_pyfunction!(write_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(assess_status, m)?)?;
    m.add_function(wrap_pyfunction!(crosscheck_status, m)?)?;
    Ok(())
}
