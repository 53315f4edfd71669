//! Python functions for snap-crypt: recipients, streaming encrypt/decrypt, key inspection.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use snap_core::{Error, Progress};
use snap_crypt as crypt;

use crate::errors::IntoPy;
use crate::progress::sink;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key_sources(recipients: Vec<(String, Vec<u8>)>) -> Vec<crypt::KeySource> {
    recipients
        .into_iter()
        .map(|(label, bytes)| crypt::KeySource::new(label, bytes))
        .collect()
}

/// A duplicate of a caller's fd (the caller's own fd is never closed).
fn dup_fd(fd: i32, what: &str) -> snap_core::Result<File> {
    if fd < 0 {
        return Err(Error::invalid_input(format!(
            "{what}: invalid file descriptor {fd}"
        )));
    }
    // SAFETY: the fd is only borrowed for the dup call; a closed fd makes
    // try_clone_to_owned fail with EBADF, which is reported.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| Error::io(format_args!("{what} (fd {fd})"), e))
}

fn passphrase(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<u8>>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => {
            if o.is_instance_of::<PyString>() {
                Ok(Some(o.extract::<String>()?.into_bytes()))
            } else if let Ok(b) = o.cast::<PyBytes>() {
                Ok(Some(b.as_bytes().to_vec()))
            } else {
                Err(PyTypeError::new_err(
                    "passphrase must be bytes, str or None",
                ))
            }
        }
    }
}

fn secret_source(key: Vec<u8>, pass: Option<Vec<u8>>) -> crypt::SecretKeySource {
    let s = crypt::SecretKeySource::new("the secret key given", key);
    match pass {
        Some(p) => s.with_passphrase(p),
        None => s,
    }
}

fn recipient_dict<'py>(py: Python<'py>, r: &crypt::Recipient) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("label", &r.label)?;
    d.set_item("fingerprint", &r.fingerprint)?;
    d.set_item("key_id", &r.key_id)?;
    d.set_item("subkey_fingerprint", &r.subkey_fingerprint)?;
    d.set_item("algorithm", &r.algorithm)?;
    d.set_item("user_ids", &r.user_ids)?;
    d.set_item("created", unix(r.created))?;
    d.set_item("expires", r.expires.map(unix))?;
    Ok(d)
}

fn encrypt_dict<'py>(py: Python<'py>, s: &crypt::EncryptSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("plaintext_bytes", s.plaintext_bytes)?;
    d.set_item("ciphertext_bytes", s.ciphertext_bytes)?;
    d.set_item("plaintext_sha256", &s.plaintext_sha256)?;
    d.set_item("ciphertext_sha256", &s.ciphertext_sha256)?;
    d.set_item("recipients", &s.recipients)?;
    d.set_item("duration", s.duration.as_secs_f64())?;
    Ok(d)
}

fn decrypt_dict<'py>(py: Python<'py>, s: &crypt::DecryptSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("plaintext_bytes", s.plaintext_bytes)?;
    d.set_item("plaintext_sha256", &s.plaintext_sha256)?;
    d.set_item("ciphertext_bytes", s.ciphertext_bytes)?;
    d.set_item("ciphertext_sha256", &s.ciphertext_sha256)?;
    d.set_item("key_id", &s.key_id)?;
    d.set_item("key_fingerprint", &s.key_fingerprint)?;
    d.set_item("compressed", s.compressed)?;
    d.set_item("duration", s.duration.as_secs_f64())?;
    Ok(d)
}

fn component_dict<'py>(py: Python<'py>, c: &crypt::ComponentInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("fingerprint", &c.fingerprint)?;
    d.set_item("key_id", &c.key_id)?;
    d.set_item("algorithm", &c.algorithm)?;
    d.set_item("created", unix(c.created))?;
    d.set_item("capabilities", &c.capabilities)?;
    let secret = match c.secret {
        crypt::SecretState::Public => "public",
        crypt::SecretState::Unprotected => "unprotected",
        crypt::SecretState::Protected => "protected",
        crypt::SecretState::Stub => "stub",
    };
    d.set_item("secret", secret)?;
    Ok(d)
}

/// Load and check recipient public keys: `[(label, bytes), ...]` -> list of dicts.
#[pyfunction]
fn load_recipients(
    py: Python<'_>,
    sources: Vec<(String, Vec<u8>)>,
) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let sources = key_sources(sources);
    let rcpts = py.detach(|| crypt::load_recipients(&sources)).py()?;
    rcpts.iter().map(|r| recipient_dict(py, r)).collect()
}

/// Encrypt file `src` to a new file `dst` (which appears only when complete).
#[pyfunction]
#[pyo3(signature = (src, dst, recipients, progress=None))]
fn encrypt_file(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    recipients: Vec<(String, Vec<u8>)>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'_, PyDict>> {
    let sources = key_sources(recipients);
    let progress = Progress::new("encrypt", None, sink(progress));
    let summary = py
        .detach(|| {
            let rcpts = crypt::load_recipients(&sources)?;
            let summary = crypt::encrypt_file(&src, &dst, &rcpts, &progress)?;
            progress.finish();
            Ok(summary)
        })
        .py()?;
    encrypt_dict(py, &summary)
}

/// Encrypt from fd `in_fd` to fd `out_fd` (e.g. stdin to stdout); the fds stay open.
#[pyfunction]
#[pyo3(signature = (in_fd, out_fd, recipients, progress=None))]
fn encrypt_fd(
    py: Python<'_>,
    in_fd: i32,
    out_fd: i32,
    recipients: Vec<(String, Vec<u8>)>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'_, PyDict>> {
    let sources = key_sources(recipients);
    let progress = Progress::new("encrypt", None, sink(progress));
    let summary = py
        .detach(|| {
            // Keys first: a bad key fails before a byte is read or written.
            let rcpts = crypt::load_recipients(&sources)?;
            let input = dup_fd(in_fd, "input")?;
            let output = dup_fd(out_fd, "output")?;
            let summary = crypt::encrypt(&input, &output, &rcpts, &progress)?;
            progress.finish();
            Ok(summary)
        })
        .py()?;
    encrypt_dict(py, &summary)
}

/// Decrypt file `src` into a new file `dst`, which appears only if the whole
/// message decrypted and passed its integrity check.
#[pyfunction]
#[pyo3(signature = (src, dst, secret_key, passphrase=None, progress=None))]
fn decrypt_file<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    secret_key: Vec<u8>,
    passphrase: Option<&Bound<'py, PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let secret = secret_source(secret_key, self::passphrase(passphrase)?);
    let progress = Progress::new("decrypt", None, sink(progress));
    let summary = py
        .detach(|| {
            let summary = crypt::decrypt_file(&src, &dst, &secret, &progress)?;
            progress.finish();
            Ok::<_, Error>(summary)
        })
        .py()?;
    decrypt_dict(py, &summary)
}

/// Decrypt from fd `in_fd` to fd `out_fd`; the fds stay open. The output is
/// UNTRUSTED unless this returns (an integrity failure raises IntegrityError
/// after plaintext was written).
#[pyfunction]
#[pyo3(signature = (in_fd, out_fd, secret_key, passphrase=None, progress=None))]
fn decrypt_fd<'py>(
    py: Python<'py>,
    in_fd: i32,
    out_fd: i32,
    secret_key: Vec<u8>,
    passphrase: Option<&Bound<'py, PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let secret = secret_source(secret_key, self::passphrase(passphrase)?);
    let progress = Progress::new("decrypt", None, sink(progress));
    let summary = py
        .detach(|| {
            let input = dup_fd(in_fd, "input")?;
            let output = dup_fd(out_fd, "output")?;
            let summary = crypt::decrypt(&input, &output, &secret, &progress)?;
            progress.finish();
            Ok(summary)
        })
        .py()?;
    decrypt_dict(py, &summary)
}

/// Describe the public or secret keys in `data` (never their secret material).
#[pyfunction]
fn inspect_keys<'py>(py: Python<'py>, data: Vec<u8>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let infos = py.detach(|| crypt::inspect_keys(&data)).py()?;
    infos
        .iter()
        .map(|k| {
            let d = PyDict::new(py);
            d.set_item("fingerprint", &k.fingerprint)?;
            d.set_item("key_id", &k.key_id)?;
            d.set_item("is_secret", k.is_secret)?;
            d.set_item("has_passphrase", k.has_passphrase)?;
            d.set_item("user_ids", &k.user_ids)?;
            d.set_item("primary", component_dict(py, &k.primary)?)?;
            let subs = k
                .subkeys
                .iter()
                .map(|c| component_dict(py, c))
                .collect::<PyResult<Vec<_>>>()?;
            d.set_item("subkeys", subs)?;
            match &k.usable_for_encryption {
                Ok(how) => {
                    d.set_item("usable_for_encryption", true)?;
                    d.set_item("encryption", how)?;
                }
                Err(why) => {
                    d.set_item("usable_for_encryption", false)?;
                    d.set_item("encryption", why)?;
                }
            }
            Ok(d)
        })
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load_recipients, m)?)?;
    m.add_function(wrap_pyfunction!(encrypt_file, m)?)?;
    m.add_function(wrap_pyfunction!(encrypt_fd, m)?)?;
    m.add_function(wrap_pyfunction!(decrypt_file, m)?)?;
    m.add_function(wrap_pyfunction!(decrypt_fd, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_keys, m)?)?;
    Ok(())
}
