//! Restore and proof (snap-restore): thin wrappers only.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use snap_core::Progress;
use snap_crypt::SecretKeySource;
use snap_offsite::RetrievalTier;
use snap_restore as rs;
use snap_restore::zeroize::Zeroizing;

use crate::conv::to_python;
use crate::errors::IntoPy;
use crate::progress::sink;

fn os_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let fsenc = obj.py().import("os")?.call_method1("fsencode", (obj,))?;
    Ok(fsenc.cast::<PyBytes>()?.as_bytes().to_vec())
}

fn path_arg(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    Ok(PathBuf::from(OsString::from_vec(os_bytes(obj)?)))
}

fn opt_path(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<PathBuf>> {
    match obj {
        Some(o) if !o.is_none() => Ok(Some(path_arg(o)?)),
        _ => Ok(None),
    }
}

fn secret_bytes(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Vec<u8>>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) if o.is_instance_of::<PyString>() => Ok(Some(o.extract::<String>()?.into_bytes())),
        Some(o) => match o.cast::<PyBytes>() {
            Ok(b) => Ok(Some(b.as_bytes().to_vec())),
            Err(_) => Err(PyTypeError::new_err(format!(
                "{what} must be bytes, str or None"
            ))),
        },
    }
}

/// A Python dict (or None) → JSON value, through `json.dumps`.
fn json_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<serde_json::Value> {
    match obj {
        Some(o) if !o.is_none() => {
            let text: String = o
                .py()
                .import("json")?
                .call_method1("dumps", (o,))?
                .extract()?;
            serde_json::from_str(&text)
                .map_err(|e| snap_core::Error::invalid_input(format!("not JSON data: {e}")))
                .py()
        }
        _ => Ok(serde_json::Value::Object(Default::default())),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    serde_json::from_value(json_arg(Some(obj))?)
        .map_err(|e| snap_core::Error::invalid_input(format!("{what}: {e}")))
        .py()
}

/// The secret key, its passphrase or a prompt (a callable given the key's
/// description, returning the passphrase or None).
fn key_source(
    key: Vec<u8>,
    passphrase: Option<Vec<u8>>,
    prompt: Option<Py<PyAny>>,
) -> SecretKeySource {
    let mut s = SecretKeySource::new("the secret key given", key);
    if let Some(p) = passphrase {
        s = s.with_passphrase(p);
    } else if let Some(cb) = prompt {
        s = s.with_prompt(move |desc: &str| {
            Python::attach(|py| {
                let got = cb.call1(py, (desc,)).ok()?;
                let got = got.bind(py);
                if got.is_none() {
                    None
                } else if let Ok(b) = got.cast::<PyBytes>() {
                    Some(Zeroizing::new(b.as_bytes().to_vec()))
                } else {
                    got.extract::<String>()
                        .ok()
                        .map(|s| Zeroizing::new(s.into_bytes()))
                }
            })
        });
    }
    s
}

/// What to restore: raw image paths (`select`), or a server at a snapshot
/// with paths on that server.
fn selection(
    select: Option<Vec<Bound<'_, PyAny>>>,
    snapshot: Option<&str>,
    server: Option<&str>,
    paths: Option<Vec<Bound<'_, PyAny>>>,
) -> PyResult<rs::Selection> {
    let raw = |v: Option<Vec<Bound<'_, PyAny>>>| -> PyResult<Vec<Vec<u8>>> {
        v.unwrap_or_default().iter().map(os_bytes).collect()
    };
    match (snapshot, server) {
        (Some(snap), Some(srv)) => {
            if select.as_ref().is_some_and(|s| !s.is_empty()) {
                return Err(snap_core::Error::invalid_input(
                    "give either select or snapshot+server, not both",
                ))
                .py();
            }
            rs::Selection::server(snap, srv, &raw(paths)?).py()
        }
        (None, None) => {
            if paths.as_ref().is_some_and(|p| !p.is_empty()) {
                return Err(snap_core::Error::invalid_input(
                    "paths need snapshot and server",
                ))
                .py();
            }
            Ok(rs::Selection::paths(raw(select)?))
        }
        _ => Err(snap_core::Error::invalid_input(
            "snapshot and server go together",
        ))
        .py(),
    }
}

#[allow(clippy::too_many_arguments)]
fn fetch_options(
    work_dir: Option<PathBuf>,
    dest: Option<&std::path::Path>,
    request: bool,
    tier: &str,
    days: u32,
    wait: Option<f64>,
    poll: f64,
    resume: bool,
) -> PyResult<rs::FetchOptions> {
    let work_parent = work_dir.unwrap_or_else(|| match dest {
        Some(d) => rs::default_work_parent(d),
        None => PathBuf::from("/var/tmp"),
    });
    Ok(rs::FetchOptions {
        work_parent,
        retrieval: rs::RetrievalOptions {
            request,
            tier: RetrievalTier::parse(tier).py()?,
            days,
            wait: wait.map(|w| Duration::from_secs_f64(w.max(0.0))),
            poll: Duration::from_secs_f64(poll.max(0.0)),
        },
        resume,
    })
}

/// Archives off-site: a target from settings and/or a sealed credentials pack.
#[pyclass(frozen, module = "snap_core._rust")]
struct ArchiveStore {
    inner: rs::creds::Offsite,
}

#[pymethods]
impl ArchiveStore {
    #[new]
    #[pyo3(signature = (settings=None, creds=None, passphrase=None))]
    fn new(
        py: Python<'_>,
        settings: Option<&Bound<'_, PyAny>>,
        creds: Option<&Bound<'_, PyAny>>,
        passphrase: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let settings = json_arg(settings)?;
        let sealed = secret_bytes(creds, "creds")?;
        let pass = secret_bytes(passphrase, "passphrase")?.map(Zeroizing::new);
        let inner = py
            .detach(|| {
                let creds = match sealed {
                    Some(s) => {
                        let p = pass.ok_or_else(|| {
                            snap_core::Error::invalid_input(
                                "a credentials pack needs its passphrase",
                            )
                        })?;
                        Some(rs::creds::open(&s, &p, "the credentials pack")?)
                    }
                    None => None,
                };
                rs::creds::open_offsite(&settings, creds.as_ref())
            })
            .py()?;
        Ok(ArchiveStore { inner })
    }

    /// The key prefix the credentials pack names, if any.
    #[getter]
    fn prefix(&self) -> Option<String> {
        self.inner.prefix.clone()
    }

    fn describe(&self) -> String {
        self.inner.target.describe()
    }

    /// Every archive under `prefix` from its manifest, oldest first.
    #[pyo3(signature = (prefix="snap/", head=true))]
    fn list<'py>(&self, py: Python<'py>, prefix: &str, head: bool) -> PyResult<Bound<'py, PyAny>> {
        let rows = py
            .detach(|| rs::list_archives(self.inner.target.as_ref(), prefix, head))
            .py()?;
        to_python(py, &rows)
    }

    /// The manifest of an archive (archive or manifest key).
    /// A chain manifest (`*.chain.json`) is read as such.
    fn manifest<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let t = self.inner.target.as_ref();
        if rs::chain::is_chain_manifest(key) {
            let m = py.detach(|| rs::chain::load_chain_manifest(t, key)).py()?;
            return to_python(py, &m);
        }
        let m = py.detach(|| rs::load_manifest(t, key)).py()?;
        to_python(py, &m)
    }

    /// The manifest of the newest archive under `prefix`.
    #[pyo3(signature = (prefix="snap/"))]
    fn newest<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyAny>> {
        let m = py
            .detach(|| rs::list::newest(self.inner.target.as_ref(), prefix))
            .py()?;
        match m {
            rs::list::Newest::Archive(m) => to_python(py, &m),
            rs::list::Newest::Chain(m) => to_python(py, &m),
        }
    }

    /// Retrieval state of an archive, asking for a retrieval if `request`.
    #[pyo3(signature = (key, request=false, tier="Standard", days=3))]
    fn retrieval<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        request: bool,
        tier: &str,
        days: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = rs::RetrievalOptions {
            request,
            tier: RetrievalTier::parse(tier).py()?,
            days,
            wait: Some(Duration::ZERO),
            poll: Duration::ZERO,
        };
        let t = self.inner.target.as_ref();
        let r = py.detach(|| match rs::fetch::ensure_readable(t, key, &opts, &None) {
            Ok(r) => Ok(serde_json::to_value(r).unwrap_or_default()),
            Err(e) if e.kind() == snap_core::ErrorKind::NotReady => Ok(serde_json::json!({
                "status": t.retrieval_status(key).map(|s| s.name().to_string()).unwrap_or_default(),
                "requested": request,
                "message": e.to_string(),
            })),
            Err(e) => Err(e),
        });
        to_python(py, &r.py()?)
    }

    /// Restore from off-site: `key` (archive or manifest key; None: the
    /// newest under `prefix`) decrypted with `secret_key`, checked, and the
    /// selection extracted into `dest`.
    #[pyo3(signature = (key, secret_key, dest, select=None, snapshot=None, server=None, paths=None,
        passphrase=None, prompt=None, overwrite=false, work_dir=None, prefix="snap/", request=true,
        tier="Standard", days=3, wait=None, poll=600.0, resume=true, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn restore<'py>(
        &self,
        py: Python<'py>,
        key: Option<String>,
        secret_key: Vec<u8>,
        dest: &Bound<'py, PyAny>,
        select: Option<Vec<Bound<'py, PyAny>>>,
        snapshot: Option<&str>,
        server: Option<&str>,
        paths: Option<Vec<Bound<'py, PyAny>>>,
        passphrase: Option<&Bound<'py, PyAny>>,
        prompt: Option<Py<PyAny>>,
        overwrite: bool,
        work_dir: Option<&Bound<'py, PyAny>>,
        prefix: &str,
        request: bool,
        tier: &str,
        days: u32,
        wait: Option<f64>,
        poll: f64,
        resume: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dest = path_arg(dest)?;
        let sel = selection(select, snapshot, server, paths)?;
        let opts = fetch_options(
            opt_path(work_dir)?,
            Some(&dest),
            request,
            tier,
            days,
            wait,
            poll,
            resume,
        )?;
        let secret = key_source(secret_key, secret_bytes(passphrase, "passphrase")?, prompt);
        let sink = sink(progress);
        let t = self.inner.target.as_ref();
        let rep = py
            .detach(|| {
                let point = match key.as_deref() {
                    Some(k) if rs::chain::is_chain_manifest(k) => {
                        rs::list::Newest::Chain(rs::chain::load_chain_manifest(t, k)?)
                    }
                    Some(k) => rs::list::Newest::Archive(rs::load_manifest(t, k)?),
                    None => rs::list::newest(t, prefix)?,
                };
                let out = rs::Output {
                    selection: &sel,
                    dest: &dest,
                    overwrite,
                };
                match point {
                    rs::list::Newest::Archive(m) => {
                        rs::restore_offsite(t, &m, &secret, out, &opts, sink)
                    }
                    rs::list::Newest::Chain(m) => {
                        let k = m.key.clone().unwrap_or_default();
                        let pieces = rs::chain::Pieces::Offsite(t);
                        rs::chain::restore_chain(&pieces, &m, &k, &secret, out, &opts, sink)
                    }
                }
            })
            .py()?;
        to_python(py, &rep)
    }

    /// The off-site audit of every archive under `prefix`.
    #[pyo3(signature = (prefix="snap/", min_retain_days=90, max_age_days=16.0, lock_mode="COMPLIANCE"))]
    fn audit<'py>(
        &self,
        py: Python<'py>,
        prefix: &str,
        min_retain_days: u32,
        max_age_days: f64,
        lock_mode: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let policy = rs::proof::AuditPolicy {
            min_retain_days,
            lock_mode: lock_mode.to_string(),
            max_age_days,
        };
        let r = py
            .detach(|| {
                rs::proof::audit(
                    self.inner.target.as_ref(),
                    prefix,
                    &policy,
                    SystemTime::now(),
                )
            })
            .py()?;
        to_python(py, &r)
    }

    /// Audit, and with `sample` and `secret_key` the restore drill; the
    /// record is kept under `state_dir` (verify-last.json, verify.jsonl).
    /// A drill waiting for a retrieval is result "pending".
    #[pyo3(signature = (prefix="snap/", sample=None, secret_key=None, passphrase=None, state_dir=None,
        work_dir=None, min_retain_days=90, max_age_days=16.0, lock_mode="COMPLIANCE", request=true,
        tier="Bulk", days=3, wait=None, poll=600.0, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        prefix: &str,
        sample: Option<&Bound<'py, PyAny>>,
        secret_key: Option<Vec<u8>>,
        passphrase: Option<&Bound<'py, PyAny>>,
        state_dir: Option<&Bound<'py, PyAny>>,
        work_dir: Option<&Bound<'py, PyAny>>,
        min_retain_days: u32,
        max_age_days: f64,
        lock_mode: &str,
        request: bool,
        tier: &str,
        days: u32,
        wait: Option<f64>,
        poll: f64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sample: Option<rs::proof::Sample> = match sample {
            Some(s) if !s.is_none() => Some(from_json(s, "drill sample")?),
            _ => None,
        };
        if sample.is_some() != secret_key.is_some() {
            return Err(snap_core::Error::invalid_input(
                "the drill needs both a sample and the drill key",
            ))
            .py();
        }
        let policy = rs::proof::AuditPolicy {
            min_retain_days,
            lock_mode: lock_mode.to_string(),
            max_age_days,
        };
        let state_dir = opt_path(state_dir)?;
        let opts = fetch_options(
            opt_path(work_dir)?,
            None,
            request,
            tier,
            days,
            wait,
            poll,
            true,
        )?;
        let secret = secret_key.map(|k| key_source(k, None, None));
        let secret = match (secret, secret_bytes(passphrase, "passphrase")?) {
            (Some(s), Some(p)) => Some(s.with_passphrase(p)),
            (s, _) => s,
        };
        let sink = sink(progress);
        let t = self.inner.target.as_ref();
        let rec = py
            .detach(|| {
                let mut rec = rs::proof::VerifyRecord::start();
                let clock = std::time::Instant::now();
                let mut error = None;
                match rs::proof::audit(t, prefix, &policy, SystemTime::now()) {
                    Ok(a) => rec.audit = Some(a),
                    Err(e) => error = Some(e),
                }
                if error.is_none()
                    && let (Some(s), Some(k)) = (&sample, &secret)
                {
                    match rs::drill_offsite(t, s, k, &opts, sink) {
                        Ok(d) => rec.drill = Some(d),
                        Err(e) => error = Some(e),
                    }
                }
                rec.seconds = clock.elapsed().as_secs_f64();
                rec.finish(state_dir.as_deref(), error.as_ref())
            })
            .py()?;
        to_python(py, &rec)
    }
}

/// Restore from an archive file on disk (air-gapped). `manifest`: a
/// manifest file (default: ARCHIVE.manifest.json next to it, if present).
#[pyfunction]
#[pyo3(signature = (archive, secret_key, dest, select=None, snapshot=None, server=None, paths=None,
    manifest=None, passphrase=None, prompt=None, overwrite=false, work_dir=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn restore_from_file<'py>(
    py: Python<'py>,
    archive: &Bound<'py, PyAny>,
    secret_key: Vec<u8>,
    dest: &Bound<'py, PyAny>,
    select: Option<Vec<Bound<'py, PyAny>>>,
    snapshot: Option<&str>,
    server: Option<&str>,
    paths: Option<Vec<Bound<'py, PyAny>>>,
    manifest: Option<&Bound<'py, PyAny>>,
    passphrase: Option<&Bound<'py, PyAny>>,
    prompt: Option<Py<PyAny>>,
    overwrite: bool,
    work_dir: Option<&Bound<'py, PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let archive = path_arg(archive)?;
    let dest = path_arg(dest)?;
    let sel = selection(select, snapshot, server, paths)?;
    let manifest = opt_path(manifest)?;
    let work = opt_path(work_dir)?.unwrap_or_else(|| rs::default_work_parent(&dest));
    let secret = key_source(secret_key, secret_bytes(passphrase, "passphrase")?, prompt);
    let sink = sink(progress);
    let rep = py
        .detach(|| {
            if let Some(mp) = manifest
                .as_deref()
                .filter(|m| rs::chain::is_chain_manifest(&m.to_string_lossy()))
            {
                // A chain link: `archive` is the directory of its pieces.
                let text =
                    std::fs::read(mp).map_err(|e| snap_core::Error::io_path("reading", mp, e))?;
                let m = rs::chain::parse_manifest(&text, &mp.display().to_string())?;
                let opts = rs::FetchOptions {
                    work_parent: work.clone(),
                    retrieval: rs::RetrievalOptions::default(),
                    resume: false,
                };
                return rs::chain::restore_chain(
                    &rs::chain::Pieces::Dir(&archive),
                    &m,
                    &mp.display().to_string(),
                    &secret,
                    rs::Output {
                        selection: &sel,
                        dest: &dest,
                        overwrite,
                    },
                    &opts,
                    sink,
                );
            }
            let m = manifest
                .as_deref()
                .map(rs::list::read_manifest_file)
                .transpose()?;
            rs::restore_file(
                &archive,
                m,
                &secret,
                rs::Output {
                    selection: &sel,
                    dest: &dest,
                    overwrite,
                },
                &work,
                sink,
            )
        })
        .py()?;
    to_python(py, &rep)
}

/// Restore a file, a directory or a whole server (`path` "/") at `snapshot`
/// from the backup server's history into `dest` (standing for its `/`).
#[pyfunction]
#[pyo3(signature = (history, snapshot, server, dest, path=None, overwrite=false, work_dir=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn restore_from_history<'py>(
    py: Python<'py>,
    history: &Bound<'py, PyAny>,
    snapshot: &str,
    server: &str,
    dest: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
    overwrite: bool,
    work_dir: Option<&Bound<'py, PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let history = path_arg(history)?;
    let dest = path_arg(dest)?;
    let pick = pick_arg(snapshot, server, path)?;
    let work = opt_path(work_dir)?;
    let sink = sink(progress);
    let rep = py
        .detach(|| {
            rs::restore_from_history(&history, &pick, &dest, overwrite, work.as_deref(), sink)
        })
        .py()?;
    to_python(py, &rep)
}

/// Pack a pick of history into a new image (for the trip to a server).
#[pyfunction]
#[pyo3(signature = (history, snapshot, server, image, path=None))]
fn pack_history_pick<'py>(
    py: Python<'py>,
    history: &Bound<'py, PyAny>,
    snapshot: &str,
    server: &str,
    image: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let history = path_arg(history)?;
    let image = path_arg(image)?;
    let pick = pick_arg(snapshot, server, path)?;
    let packed = py
        .detach(|| rs::history::pack_pick(&history, &pick, &image, &Progress::silent("pack")))
        .py()?;
    to_python(py, &packed)
}

/// A pick of history from Python arguments (`path`: str or bytes; none: all).
fn pick_arg(snapshot: &str, server: &str, path: Option<&Bound<'_, PyAny>>) -> PyResult<rs::Pick> {
    let path = match path {
        Some(p) if !p.is_none() => os_bytes(p)?,
        _ => Vec::new(),
    };
    rs::Pick::new(snapshot, server, &path).py()
}

/// Extract a packed pick into `dest` (standing for the server's `/`) on
/// the server it is restored to. Where it lands comes from `server` and
/// `path` (what the operator asked), never from `packed` (what the backup
/// server says; only its metadata of parents the restore creates is used,
/// and any disagreement is refused). Device nodes, set-id files and file
/// capabilities need `special` unless `path` is `/`.
#[pyfunction]
#[pyo3(signature = (image, packed, dest, server, path, overwrite=false, special=false, progress=None))]
#[allow(clippy::too_many_arguments)]
fn extract_history_pick<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    packed: &Bound<'py, PyAny>,
    dest: &Bound<'py, PyAny>,
    server: &str,
    path: &Bound<'py, PyAny>,
    overwrite: bool,
    special: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let image = path_arg(image)?;
    let dest = path_arg(dest)?;
    let asked = rs::Asked::new(server, &os_bytes(path)?).py()?;
    let packed: rs::history::PackedPick = from_json(packed, "packed pick")?;
    let p = Progress::new("extract", Some(packed.bytes), sink(progress));
    let landing = rs::Landing {
        allow_special: special,
    };
    let s = py
        .detach(|| rs::land(&image, &packed, &asked, &dest, overwrite, landing, &p))
        .py()?;
    to_python(py, &s)
}

/// Seal a file for the holder of an SSH key (`ssh-ed25519 AAAA...`).
#[pyfunction]
fn seal_for_server<'py>(
    py: Python<'py>,
    src: &Bound<'py, PyAny>,
    dst: &Bound<'py, PyAny>,
    recipient: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let (src, dst) = (path_arg(src)?, path_arg(dst)?);
    let s = py
        .detach(|| rs::channel::seal_file(&src, &dst, recipient, &Progress::silent("seal")))
        .py()?;
    to_python(py, &s)
}

/// Open a sealed file with the SSH private key at `identity`; `dst`
/// appears only if it is intact. Returns the bytes written.
#[pyfunction]
#[pyo3(signature = (src, dst, identity, sha256=None))]
fn open_sealed(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    identity: &Bound<'_, PyAny>,
    sha256: Option<String>,
) -> PyResult<u64> {
    let (src, dst, id) = (path_arg(src)?, path_arg(dst)?, path_arg(identity)?);
    py.detach(|| {
        rs::channel::open_file(
            &src,
            &dst,
            &id,
            sha256.as_deref(),
            &Progress::silent("open"),
        )
    })
    .py()
}

/// Seal read-only off-site credentials under a passphrase (armored age).
#[pyfunction]
#[pyo3(signature = (access_key_id, secret_access_key, target, passphrase, session_token=None,
    prefix=None, note=None, work_factor=None))]
#[allow(clippy::too_many_arguments)]
fn seal_creds<'py>(
    py: Python<'py>,
    access_key_id: String,
    secret_access_key: String,
    target: &Bound<'py, PyAny>,
    passphrase: &Bound<'py, PyAny>,
    session_token: Option<String>,
    prefix: Option<String>,
    note: Option<String>,
    work_factor: Option<u8>,
) -> PyResult<Bound<'py, PyBytes>> {
    let target = json_arg(Some(target))?;
    let pass = Zeroizing::new(secret_bytes(Some(passphrase), "passphrase")?.unwrap_or_default());
    let sealed = py
        .detach(|| {
            let c = rs::creds::Creds::new(
                access_key_id,
                secret_access_key,
                session_token,
                target,
                prefix,
                note,
            )?;
            rs::creds::seal(&c, &pass, work_factor)
        })
        .py()?;
    Ok(PyBytes::new(py, &sealed))
}

/// What a credentials pack holds, without its secret.
#[pyfunction]
fn inspect_creds<'py>(
    py: Python<'py>,
    sealed: Vec<u8>,
    passphrase: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let pass = Zeroizing::new(secret_bytes(Some(passphrase), "passphrase")?.unwrap_or_default());
    let c = py
        .detach(|| rs::creds::open(&sealed, &pass, "the credentials pack"))
        .py()?;
    to_python(
        py,
        &serde_json::json!({
            "format": c.format,
            "access_key_id": c.access_key_id,
            "session_token": c.session_token.is_some(),
            "target": c.target,
            "prefix": c.prefix,
            "created": c.created,
            "note": c.note,
        }),
    )
}

/// Pick a drill sample where history is (the backup server): paths of the
/// newest archive's snapshot that history still holds, described as the
/// server had them.
#[pyfunction]
#[pyo3(signature = (history, manifest, random_files=50, max_bytes=268435456, seed=None))]
fn drill_sample<'py>(
    py: Python<'py>,
    history: &Bound<'py, PyAny>,
    manifest: &Bound<'py, PyAny>,
    random_files: usize,
    max_bytes: u64,
    seed: Option<u64>,
) -> PyResult<Bound<'py, PyAny>> {
    let history = path_arg(history)?;
    // A full archive's manifest or a chain link's (it has "chain").
    let point = if manifest.getattr("get")?.call1(("chain",))?.is_none() {
        let m: snap_archive::Manifest = from_json(manifest, "manifest")?;
        rs::proof::RestorePoint::from(&m)
    } else {
        let m: snap_archive::chain::ChainManifest = from_json(manifest, "chain manifest")?;
        rs::proof::RestorePoint::chain(&m).py()?
    };
    let opts = rs::proof::SampleOptions {
        random_files,
        max_bytes,
        seed,
    };
    let s = py
        .detach(|| rs::proof::sample(&history, &point, &opts))
        .py()?;
    to_python(py, &s)
}

/// Describe paths (escaped, relative to `root`) as a server has them;
/// `fake_super`: read rsync's xattrs (history).
#[pyfunction]
#[pyo3(signature = (root, paths, fake_super=false))]
fn describe_tree<'py>(
    py: Python<'py>,
    root: &Bound<'py, PyAny>,
    paths: Vec<String>,
    fake_super: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let root = path_arg(root)?;
    let d = py
        .detach(|| rs::proof::describe(&root, &paths, fake_super))
        .py()?;
    to_python(py, &d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ArchiveStore>()?;
    m.add_function(wrap_pyfunction!(restore_from_file, m)?)?;
    m.add_function(wrap_pyfunction!(restore_from_history, m)?)?;
    m.add_function(wrap_pyfunction!(pack_history_pick, m)?)?;
    m.add_function(wrap_pyfunction!(extract_history_pick, m)?)?;
    m.add_function(wrap_pyfunction!(seal_for_server, m)?)?;
    m.add_function(wrap_pyfunction!(open_sealed, m)?)?;
    m.add_function(wrap_pyfunction!(seal_creds, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_creds, m)?)?;
    m.add_function(wrap_pyfunction!(drill_sample, m)?)?;
    m.add_function(wrap_pyfunction!(describe_tree, m)?)?;
    Ok(())
}
