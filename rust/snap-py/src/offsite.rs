//! Python functions for snap-offsite: an `OffsiteTarget` class over the
//! `ArchiveTarget` trait (S3 with Object Lock, Glacier vaults), the Glacier
//! tree hash, object keys and retention dates.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use snap_core::{Error, Progress};
use snap_offsite as off;

use crate::errors::IntoPy;
use crate::progress::sink;

fn unix(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// `str` or `os.PathLike` -> path (via `os.fsencode`, so non-UTF-8 names survive).
fn path_arg(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let os = obj.py().import("os")?;
    let raw = os.call_method1("fsencode", (obj,))?;
    let bytes = raw.cast::<PyBytes>()?.as_bytes().to_vec();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// The keys a target dict may hold. Secrets are not among them: credentials
/// come from the AWS chain (environment, profile, role, web identity, IMDS).
/// Settings dict -> target configuration, through the one parser in snap-offsite.
fn target_config(d: &Bound<'_, PyDict>) -> PyResult<off::TargetConfig> {
    let text: String = d
        .py()
        .import("json")?
        .call_method1("dumps", (d,))?
        .extract()?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        crate::errors::to_py(Error::invalid_input(format!(
            "off-site target settings: {e}"
        )))
    })?;
    off::TargetSettings::from_value(value)
        .and_then(|s| s.to_config())
        .py()
}

fn put_options(
    storage_class: &str,
    retain_days: u32,
    size_hint: Option<u64>,
    content_type: Option<String>,
    description: Option<String>,
) -> off::PutOptions {
    off::PutOptions {
        storage_class: storage_class.to_string(),
        retain_days,
        size_hint,
        content_type,
        description,
    }
}

fn upload_dict<'py>(py: Python<'py>, r: &off::UploadResult) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", &r.key)?;
    d.set_item("size", r.size)?;
    d.set_item("sha256", &r.sha256)?;
    d.set_item("tree_hash", &r.tree_hash)?;
    d.set_item("version_id", &r.version_id)?;
    d.set_item("etag", &r.etag)?;
    d.set_item("parts", r.parts)?;
    d.set_item("part_size", r.part_size)?;
    d.set_item("retain_until", unix(r.retain_until))?;
    d.set_item("storage_class", &r.storage_class)?;
    Ok(d)
}

/// An upload's dict with its lock as read back (`lock`: held or repaired,
/// see `snap_offsite::lockcheck`; None for vaults).
fn with_lock<'py>(
    py: Python<'py>,
    r: &off::UploadResult,
    lock: Option<off::LockCheck>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = upload_dict(py, r)?;
    match lock {
        Some(l) => d.set_item("lock", crate::conv::to_python(py, &l)?)?,
        None => d.set_item("lock", py.None())?,
    }
    Ok(d)
}

fn retrieval_dict<'py>(py: Python<'py>, s: &off::RetrievalStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("status", s.name())?;
    d.set_item("readable", s.is_readable())?;
    let expires = match s {
        off::RetrievalStatus::Ready { expires } => unix(*expires),
        _ => None,
    };
    d.set_item("expires", expires)?;
    Ok(d)
}

fn incomplete_dict<'py>(
    py: Python<'py>,
    u: &off::IncompleteUpload,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", &u.key)?;
    d.set_item("upload_id", &u.upload_id)?;
    d.set_item("initiated", unix(u.initiated))?;
    Ok(d)
}

/// An off-site target (S3 bucket with Object Lock, or Glacier vault), built
/// from a dict of settings; see `TARGET_KEYS`.
#[pyclass(frozen, module = "snap_core._rust")]
struct OffsiteTarget {
    inner: Box<dyn off::ArchiveTarget>,
}

#[pymethods]
impl OffsiteTarget {
    #[new]
    fn new(py: Python<'_>, config: &Bound<'_, PyDict>) -> PyResult<Self> {
        let c = target_config(config)?;
        let inner = py.detach(|| off::open_target(&c)).py()?;
        Ok(OffsiteTarget { inner })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn __repr__(&self) -> String {
        format!("<OffsiteTarget {}>", self.inner.describe())
    }

    /// Upload a file (streamed in parts; nothing exists until it is complete).
    #[pyo3(signature = (path, key, storage_class="GLACIER", retain_days=90, description=None,
        content_type=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn put_file<'py>(
        &self,
        py: Python<'py>,
        path: &Bound<'py, PyAny>,
        key: &str,
        storage_class: &str,
        retain_days: u32,
        description: Option<String>,
        content_type: Option<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let path = path_arg(path)?;
        let opts = put_options(storage_class, retain_days, None, content_type, description);
        let progress = Progress::new("upload", None, sink(progress));
        let (r, lock) = py
            .detach(|| {
                let r = off::upload_file(self.inner.as_ref(), &path, key, &opts, &progress)?;
                progress.finish();
                let lock = off::ensure_upload_locked(self.inner.as_ref(), &r)?;
                Ok::<_, Error>((r, lock))
            })
            .py()?;
        with_lock(py, &r, lock)
    }

    /// Upload a small object (a manifest) in one request.
    #[pyo3(signature = (data, key, storage_class="STANDARD", retain_days=90, description=None,
        content_type=None))]
    #[allow(clippy::too_many_arguments)]
    fn put_bytes<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        key: &str,
        storage_class: &str,
        retain_days: u32,
        description: Option<String>,
        content_type: Option<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let bytes = data.as_bytes().to_vec();
        let opts = put_options(storage_class, retain_days, None, content_type, description);
        let (r, lock) = py
            .detach(|| {
                let r = self.inner.put_small(key, &bytes, &opts)?;
                let lock = off::ensure_upload_locked(self.inner.as_ref(), &r)?;
                Ok::<_, Error>((r, lock))
            })
            .py()?;
        with_lock(py, &r, lock)
    }

    /// The Object Lock retention of `key` (at `version_id`) as the server
    /// holds it now (GetObjectRetention): {"mode", "retain_until"}; both
    /// None when the version has no lock.
    #[pyo3(signature = (key, version_id=None))]
    fn retention<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        version_id: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let r = py.detach(|| self.inner.retention(key, version_id)).py()?;
        let d = PyDict::new(py);
        d.set_item("mode", &r.mode)?;
        d.set_item("retain_until", unix(r.retain_until))?;
        Ok(d)
    }

    fn head<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyDict>> {
        let i = py.detach(|| self.inner.head(key)).py()?;
        let d = PyDict::new(py);
        d.set_item("key", &i.key)?;
        d.set_item("size", i.size)?;
        d.set_item("lock_mode", &i.lock_mode)?;
        d.set_item("retain_until", unix(i.retain_until))?;
        d.set_item("legal_hold", i.legal_hold)?;
        d.set_item("storage_class", &i.storage_class)?;
        d.set_item("checksum_sha256", &i.checksum_sha256)?;
        d.set_item("version_id", &i.version_id)?;
        d.set_item("etag", &i.etag)?;
        d.set_item("last_modified", unix(i.last_modified))?;
        d.set_item("retrieval", retrieval_dict(py, &i.retrieval)?)?;
        Ok(d)
    }

    fn list<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyList>> {
        let entries = py.detach(|| self.inner.list(prefix)).py()?;
        let out = PyList::empty(py);
        for e in entries {
            let d = PyDict::new(py);
            d.set_item("key", &e.key)?;
            d.set_item("size", e.size)?;
            d.set_item("storage_class", &e.storage_class)?;
            d.set_item("last_modified", unix(e.last_modified))?;
            out.append(d)?;
        }
        Ok(out)
    }

    fn list_incomplete<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyList>> {
        let uploads = py.detach(|| self.inner.list_incomplete(prefix)).py()?;
        let out = PyList::empty(py);
        for u in &uploads {
            out.append(incomplete_dict(py, u)?)?;
        }
        Ok(out)
    }

    /// Abort incomplete uploads under `prefix` started at least `min_age`
    /// seconds ago; returns what was aborted.
    #[pyo3(signature = (prefix, min_age=0.0))]
    fn abort_stale<'py>(
        &self,
        py: Python<'py>,
        prefix: &str,
        min_age: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let age = Duration::from_secs_f64(min_age.max(0.0));
        let aborted = py
            .detach(|| off::abort_stale(self.inner.as_ref(), prefix, age))
            .py()?;
        let out = PyList::empty(py);
        for u in &aborted {
            out.append(incomplete_dict(py, u)?)?;
        }
        Ok(out)
    }

    /// Download `key` (or its version `version_id`) into `path`; with
    /// `resume`, keep an existing file's bytes and fetch only the rest.
    #[pyo3(signature = (key, path, resume=false, version_id=None, progress=None))]
    fn get_file<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        path: &Bound<'py, PyAny>,
        resume: bool,
        version_id: Option<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let path = path_arg(path)?;
        let progress = Progress::new("download", None, sink(progress));
        let r = py
            .detach(|| {
                let r = off::download_to_file(
                    self.inner.as_ref(),
                    key,
                    version_id.as_deref(),
                    &path,
                    resume,
                    &progress,
                )?;
                progress.finish();
                Ok::<_, Error>(r)
            })
            .py()?;
        let d = PyDict::new(py);
        d.set_item("resumed_from", r.resumed_from)?;
        d.set_item("fetched", r.fetched)?;
        d.set_item("sha256", &r.sha256)?;
        Ok(d)
    }

    #[pyo3(signature = (key, days=3, tier="Standard"))]
    fn request_retrieval<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        days: u32,
        tier: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let tier = off::RetrievalTier::parse(tier).py()?;
        let s = py
            .detach(|| self.inner.request_retrieval(key, days, tier))
            .py()?;
        retrieval_dict(py, &s)
    }

    fn retrieval_status<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.retrieval_status(key)).py()?;
        retrieval_dict(py, &s)
    }
}

/// Glacier SHA-256 tree hash (hex) of bytes, or of the file at a path.
#[pyfunction]
fn glacier_tree_hash(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(b) = data.cast::<PyBytes>() {
        let bytes = b.as_bytes().to_vec();
        return Ok(py.detach(|| off::tree_hash_hex(&bytes)));
    }
    let path = path_arg(data).map_err(|_| PyTypeError::new_err("expected bytes or a path"))?;
    py.detach(|| off::tree_hash_file_hex(&path)).py()
}

/// A unique object key `<prefix>/<YYYY>/<YYYYMMDDTHHMMSSZ>-<random><suffix>`.
#[pyfunction]
#[pyo3(signature = (prefix, suffix=""))]
fn offsite_archive_key(prefix: &str, suffix: &str) -> PyResult<String> {
    off::archive_key(prefix, SystemTime::now(), suffix).py()
}

/// The retain-until date (unix seconds) for `days` of retention from now;
/// refuses fewer than 90 days.
#[pyfunction]
fn offsite_retain_until(days: u32) -> PyResult<f64> {
    let t = off::retain_until(SystemTime::now(), days).py()?;
    Ok(unix(Some(t)).unwrap_or(0.0))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OffsiteTarget>()?;
    m.add_function(wrap_pyfunction!(glacier_tree_hash, m)?)?;
    m.add_function(wrap_pyfunction!(offsite_archive_key, m)?)?;
    m.add_function(wrap_pyfunction!(offsite_retain_until, m)?)?;
    m.add("OFFSITE_MIN_RETAIN_DAYS", off::MIN_RETAIN_DAYS)?;
    Ok(())
}
