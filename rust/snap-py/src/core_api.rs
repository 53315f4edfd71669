//! Schedule, account names and SSH keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use snap_core::{account, schedule, sshkey};

use crate::errors::IntoPy;

/// `zlib.crc32(key.encode()) % slots`.
#[pyfunction]
#[pyo3(signature = (key, slots = 60))]
fn backup_minute(key: &str, slots: u32) -> PyResult<u32> {
    schedule::backup_minute(key, slots).py()
}

/// `(zlib.crc32(key.encode()) // slots) % 60`: seconds into the minute.
#[pyfunction]
#[pyo3(signature = (key, slots = 60))]
fn backup_splay(key: &str, slots: u32) -> PyResult<u32> {
    schedule::backup_splay(key, slots).py()
}

/// The backup server `minion_id` pushes to among `backups` (explicit map
/// first, else rendezvous hashing; docs/SCALE.md).
#[pyfunction]
#[pyo3(signature = (minion_id, backups, explicit = None))]
fn assign_backup_server(
    minion_id: &str,
    backups: Vec<String>,
    explicit: Option<BTreeMap<String, String>>,
) -> PyResult<String> {
    snap_core::assign::assign(minion_id, &backups, &explicit.unwrap_or_default()).py()
}

/// Distinct hours 0-23, sorted.
#[pyfunction]
fn validate_hours(hours: Vec<u32>) -> PyResult<Vec<u32>> {
    schedule::validate_hours(&hours).py()
}

/// `(max servers in one slot, ideal, empty slots)` for a list of keys.
#[pyfunction]
#[pyo3(signature = (keys, slots = 60))]
fn minute_spread(keys: Vec<String>, slots: u32) -> PyResult<(usize, usize, usize)> {
    schedule::spread(&keys, slots).py()
}

#[pyfunction]
fn validate_minion_id(minion_id: &str) -> PyResult<()> {
    account::validate_minion_id(minion_id).py()
}

#[pyfunction]
fn account_name(minion_id: &str) -> PyResult<String> {
    account::account_name(minion_id).py()
}

#[pyfunction]
fn validate_account_name(name: &str) -> PyResult<()> {
    account::validate_account_name(name).py()
}

#[pyfunction]
#[pyo3(signature = (minion_ids, overrides = None))]
fn account_names(
    minion_ids: Vec<String>,
    overrides: Option<BTreeMap<String, String>>,
) -> PyResult<BTreeMap<String, String>> {
    let overrides = overrides.unwrap_or_default();
    account::account_names(minion_ids.iter().map(String::as_str), &overrides).py()
}

/// `(names, rejected)`: names for every id that can have one, and the reason
/// for each that cannot (bad id, bad override, collision, an account made
/// for another server: `bound` is `{account: minion id it was made for}`).
#[pyfunction]
#[pyo3(signature = (minion_ids, overrides = None, bound = None))]
fn assign_accounts(
    minion_ids: Vec<String>,
    overrides: Option<BTreeMap<String, String>>,
    bound: Option<BTreeMap<String, String>>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let overrides = overrides.unwrap_or_default();
    let bound = bound.unwrap_or_default();
    let a = account::assign_accounts(minion_ids.iter().map(String::as_str), &overrides, &bound);
    let rejected = a
        .rejected
        .into_iter()
        .map(|(id, e)| (id, e.to_string()))
        .collect();
    (a.names, rejected)
}

fn key_dict<'py>(py: Python<'py>, k: &sshkey::ParsedKey) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", &k.key_type)?;
    d.set_item("key", &k.key)?;
    d.set_item("fingerprint", &k.fingerprint)?;
    d.set_item("comment", &k.comment)?;
    d.set_item("bits", k.bits)?;
    Ok(d)
}

/// Validate exactly one bare public key.
#[pyfunction]
fn parse_public_key<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyDict>> {
    key_dict(py, &sshkey::parse_public_key(text).py()?)
}

/// Write a new Ed25519 key pair; returns its SHA256 fingerprint.
#[pyfunction]
#[pyo3(signature = (path, comment = ""))]
fn generate_keypair(py: Python<'_>, path: PathBuf, comment: &str) -> PyResult<String> {
    py.detach(|| sshkey::generate_keypair(&path, comment)).py()
}

/// The public half of the private key at `path`, validated.
#[pyfunction]
fn public_from_private<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    key_dict(py, &sshkey::public_from_private(&path).py()?)
}

/// Rewrite a lost `path.pub` from the private key (never overwrites).
#[pyfunction]
fn restore_public<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    key_dict(py, &sshkey::restore_public(&path).py()?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(backup_minute, m)?)?;
    m.add_function(wrap_pyfunction!(assign_backup_server, m)?)?;
    m.add_function(wrap_pyfunction!(backup_splay, m)?)?;
    m.add_function(wrap_pyfunction!(validate_hours, m)?)?;
    m.add_function(wrap_pyfunction!(minute_spread, m)?)?;
    m.add_function(wrap_pyfunction!(validate_minion_id, m)?)?;
    m.add_function(wrap_pyfunction!(account_name, m)?)?;
    m.add_function(wrap_pyfunction!(validate_account_name, m)?)?;
    m.add_function(wrap_pyfunction!(account_names, m)?)?;
    m.add_function(wrap_pyfunction!(assign_accounts, m)?)?;
    m.add_function(wrap_pyfunction!(parse_public_key, m)?)?;
    m.add_function(wrap_pyfunction!(generate_keypair, m)?)?;
    m.add_function(wrap_pyfunction!(public_from_private, m)?)?;
    m.add_function(wrap_pyfunction!(restore_public, m)?)?;
    Ok(())
}
