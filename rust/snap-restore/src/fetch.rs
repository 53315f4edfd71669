//! Getting a trusted image: from off-site (retrieval, download with resume)
//! or from a file on disk, decrypted with the secret key given at restore
//! time, and checked before anything is extracted:
//!
//! 1. ciphertext size and SHA-256 against the manifest (which lives under
//!    Object Lock next to the archive) — before decryption is attempted;
//! 2. the OpenPGP integrity check (MDC) at the end of the message — the
//!    decrypted image only appears once it passed (`snap_crypt::decrypt_file`);
//! 3. plaintext size and SHA-256 against the manifest.
//!
//! All of it happens in a root-only work directory; the destination is not
//! touched until the image passed every check.

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use snap_archive::{MANIFEST_SUFFIX, Manifest};
use snap_core::progress::ProgressSink;
use snap_core::{Error, ErrorKind, Progress, Result};
use snap_crypt::SecretKeySource;
use snap_offsite::ArchiveTarget;

pub use crate::retrieval::{RetrievalOptions, RetrievalReport, ensure_readable};

/// Which checks passed (None: could not be made, no manifest).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    pub manifest: Option<String>,
    pub ciphertext_size: Option<bool>,
    pub ciphertext_sha256: Option<bool>,
    pub mdc: bool,
    pub plaintext_size: Option<bool>,
    pub plaintext_sha256: Option<bool>,
    /// Fingerprint of the secret key that decrypted it.
    pub key_fingerprint: String,
    pub download: Option<DownloadReport>,
    pub retrieval: Option<RetrievalReport>,
    pub decrypt_seconds: f64,
    /// A chain restore of a selection: the pieces it fetched and those it
    /// did not need.
    pub pieces: Option<PiecesReport>,
}

/// The pieces of a chain a restore fetched, and those it left out because
/// nothing it extracts lies in them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PiecesReport {
    pub fetched: u64,
    pub skipped: u64,
    /// Ciphertext bytes not downloaded nor decrypted.
    pub skipped_bytes: u64,
    /// Why every piece was fetched after all: the walk of the tables failed.
    pub walk_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub resumed_from: u64,
    pub fetched: u64,
    pub seconds: f64,
}

/// A decrypted image that passed every check, in a work directory that is
/// removed when this is dropped.
pub struct VerifiedImage {
    pub path: PathBuf,
    pub manifest: Option<Manifest>,
    pub checks: Checks,
    work: WorkArea,
}

impl VerifiedImage {
    pub fn work_dir(&self) -> &Path {
        &self.work.dir
    }
}

/// A root-only work directory. Removed on drop unless `keep` (a download
/// that can be resumed).
pub(crate) struct WorkArea {
    pub dir: PathBuf,
    pub keep: bool,
}

impl WorkArea {
    /// `parent/name`, created 0700 or reused if it is ours and root-only.
    pub fn open(parent: &Path, name: &str) -> Result<WorkArea> {
        fs::create_dir_all(parent).map_err(|e| Error::io_path("creating", parent, e))?;
        let dir = parent.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io_path("securing", &dir, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let m =
                    fs::symlink_metadata(&dir).map_err(|e| Error::io_path("checking", &dir, e))?;
                let me = rustix::process::geteuid().as_raw();
                if !m.is_dir() || m.uid() != me || m.mode() & 0o077 != 0 {
                    return Err(Error::new(
                        ErrorKind::Refused,
                        format!(
                            "work directory {} exists but is not a directory owned by uid {me} with mode 0700; not using it",
                            dir.display()
                        ),
                    ));
                }
            }
            Err(e) => return Err(Error::io_path("creating the work directory", &dir, e)),
        }
        Ok(WorkArea { dir, keep: false })
    }
}

impl Drop for WorkArea {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn progress(name: &str, total: Option<u64>, sink: &Option<Arc<dyn ProgressSink>>) -> Progress {
    Progress::new(name, total, sink.clone())
}

fn integrity(message: String) -> Error {
    Error::new(ErrorKind::Integrity, message)
}

/// The output of a decryption that stops at the plaintext size the
/// manifest says (`None`: no manifest, no bound): what a compression bomb,
/// or a piece padded inside its encryption, decrypts to beyond it is
/// refused, not written. A full archive's image and a chain piece's ranges
/// go through it.
pub(crate) struct Limited<W> {
    pub(crate) inner: W,
    limit: Option<u64>,
    written: u64,
}

impl<W> Limited<W> {
    pub(crate) fn new(inner: W, limit: Option<u64>) -> Self {
        Limited {
            inner,
            limit,
            written: 0,
        }
    }
}

impl<W: std::io::Write> std::io::Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.written + buf.len() as u64;
        if let Some(limit) = self.limit
            && end > limit
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("it decrypts to more than the {limit} bytes the manifest says"),
            ));
        }
        self.inner.write_all(buf)?;
        self.written = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Open `path` (`what` names it in messages) for reading, as a regular
/// file: a FIFO or a device put in its place is refused, not waited on.
/// The check is on the descriptor, which is what is then read; returns it
/// and its size.
pub(crate) fn open_regular(path: &Path, what: &str) -> Result<(fs::File, u64)> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io_path("opening", path, e))?;
    let m = f
        .metadata()
        .map_err(|e| Error::io_path("checking", path, e))?;
    if !m.is_file() {
        return Err(Error::invalid_input(format!(
            "{what} {} is not a regular file",
            path.display()
        )));
    }
    Ok((f, m.len()))
}

/// Size and SHA-256 of the first `limit` bytes of the open file `f`, read
/// again from its start.
pub(crate) fn sha256_fd(f: &fs::File, limit: u64) -> std::io::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek};
    let mut f = f;
    f.seek(std::io::SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f.take(limit), &mut h)?;
    Ok((n, hex::encode(h.finalize())))
}

/// Decrypt `cipher` into `work/image.sqfs` and check it against `manifest`.
///
/// The image's SHA-256 is what proves it against the manifest: the image is
/// what is restored. The ciphertext's is not computed again here (a
/// download hashed it as it arrived; a file's would prove nothing the
/// image's does not), except when the image disagrees with the manifest,
/// to say whether the file is another archive or the packer recorded a
/// digest that was never the image's (docs/RESTORE.md, "What a restore
/// proves").
fn decrypt_and_check(
    cipher: &Path,
    work: &WorkArea,
    manifest: Option<&Manifest>,
    key: &SecretKeySource,
    sink: &Option<Arc<dyn ProgressSink>>,
    checks: &mut Checks,
) -> Result<PathBuf> {
    let image = work.dir.join("image.sqfs");
    let _ = fs::remove_file(&image);
    let p = progress("decrypt", None, sink);
    let start = Instant::now();
    // Like snap_crypt::decrypt_file (the image appears only after the MDC
    // passed), without its fsync: the image is scratch, deleted after use,
    // and a crash only means running the restore again.
    let (input, len) = open_regular(cipher, "archive")?;
    p.set_total(len);
    // With a manifest the size is known: a longer or shorter file is
    // refused before anything decrypts it.
    if let Some(man) = manifest
        && len != man.archive.size
    {
        checks.ciphertext_size = Some(false);
        return Err(integrity(format!(
            "archive {}: the encrypted file is {len} bytes{}, the manifest says {}; not restoring from it",
            cipher.display(),
            if len < man.archive.size {
                " (truncated)"
            } else {
                ""
            },
            man.archive.size
        )));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".image.")
        .suffix(".partial")
        .tempfile_in(&work.dir)
        .map_err(|e| Error::io_path("creating a temporary file in", &work.dir, e))?;
    // And what it decrypts (or decompresses) to stops at the manifest's size.
    let out = Limited::new(tmp.as_file(), manifest.map(|m| m.plaintext.size));
    let digests = if manifest.is_some() {
        snap_crypt::Digests::PLAINTEXT
    } else {
        snap_crypt::Digests::NONE
    };
    let sum = snap_crypt::decrypt_with(
        &input,
        &format!("reading {}", cipher.display()),
        out,
        &format!("writing {}", image.display()),
        key,
        digests,
        &p,
    )?;
    tmp.persist(&image)
        .map_err(|e| Error::io_path("moving the decrypted image to", &image, e.error))?;
    p.finish();
    checks.decrypt_seconds = start.elapsed().as_secs_f64();
    checks.mdc = true;
    checks.key_fingerprint = sum.key_fingerprint.clone();
    let bad = |what: String| {
        let _ = fs::remove_file(&image);
        integrity(what)
    };
    if let Some(m) = manifest {
        let csize = sum.ciphertext_bytes == m.archive.size;
        let psize = sum.plaintext_bytes == m.plaintext.size;
        let psha = sum.plaintext_sha256 == m.plaintext.sha256;
        checks.ciphertext_size = Some(csize);
        checks.plaintext_size = Some(psize);
        checks.plaintext_sha256 = Some(psha);
        if !(csize && psize && psha) {
            // Another archive, or this one with a wrong record: the
            // ciphertext's digest tells which (unless a download proved
            // it). It is read again from the descriptor that was
            // decrypted, not by name.
            let mut file = String::new();
            if checks.ciphertext_sha256.is_none() {
                match sha256_fd(&input, m.archive.size + 1) {
                    Ok((size, sha)) if size != m.archive.size || sha != m.archive.sha256 => {
                        checks.ciphertext_sha256 = Some(false);
                        return Err(bad(format!(
                            "archive {}: the encrypted file is {size} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}; not restoring from it",
                            cipher.display(),
                            m.archive.size,
                            m.archive.sha256
                        )));
                    }
                    Ok(_) => {
                        checks.ciphertext_sha256 = Some(true);
                        file =
                            "; the encrypted file read again matches the manifest's digest".into();
                    }
                    Err(e) => file = format!("; the encrypted file could not be read again: {e}"),
                }
            }
            return Err(bad(format!(
                "archive {}: the decrypted image is {} bytes with sha256 {}, the manifest says {} bytes with sha256 {}{file}; not restoring from it",
                cipher.display(),
                sum.plaintext_bytes,
                sum.plaintext_sha256,
                m.plaintext.size,
                m.plaintext.sha256
            )));
        }
    }
    Ok(image)
}

/// An archive file on disk (air-gapped restore). `manifest`: its manifest if
/// known; otherwise `<archive>.manifest.json` next to it is used when
/// present. Without a manifest only the OpenPGP integrity check applies
/// (which proves the file is intact, not who made it).
pub fn open_archive_file(
    archive: &Path,
    manifest: Option<Manifest>,
    key: &SecretKeySource,
    work_parent: &Path,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<VerifiedImage> {
    let meta =
        fs::metadata(archive).map_err(|e| Error::io_path("opening the archive", archive, e))?;
    if !meta.is_file() {
        return Err(Error::invalid_input(format!(
            "archive {} is not a file",
            archive.display()
        )));
    }
    let manifest = match manifest {
        Some(m) => Some(m),
        None => {
            let mut side = archive.as_os_str().to_owned();
            side.push(MANIFEST_SUFFIX);
            let side = PathBuf::from(side);
            if side.is_file() {
                Some(crate::list::read_manifest_file(&side)?)
            } else {
                None
            }
        }
    };
    let mut checks = Checks {
        manifest: manifest.as_ref().map(|m| m.archive.key.clone()),
        ..Checks::default()
    };
    if let Some(m) = &manifest {
        // A cheap first look: the size.
        if meta.len() != m.archive.size {
            checks.ciphertext_size = Some(false);
            return Err(integrity(format!(
                "archive {} is {} bytes, its manifest says {}: truncated or not this archive; nothing restored",
                archive.display(),
                meta.len(),
                m.archive.size
            )));
        }
    }
    key_check(key)?;
    let work = WorkArea::open(
        work_parent,
        &format!(
            ".snap-restore-{}-{:08x}",
            snap_core::record::run_id(),
            rand::random::<u32>()
        ),
    )?;
    let path = decrypt_and_check(archive, &work, manifest.as_ref(), key, &sink, &mut checks)?;
    Ok(VerifiedImage {
        path,
        manifest,
        checks,
        work,
    })
}

/// Key problems are reported before anything is downloaded or written.
pub(crate) fn key_check(key: &SecretKeySource) -> Result<()> {
    // Decrypting an empty message parses the key first: a key error is
    // InvalidKey, anything else means the key itself is usable.
    let p = Progress::silent("key check");
    match snap_crypt::decrypt(&b""[..], std::io::sink(), key, &p) {
        Err(e) if e.kind() == ErrorKind::InvalidKey => Err(e),
        _ => Ok(()),
    }
}

/// Options of an off-site fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Parent of the work directory (ciphertext and image: about twice the
    /// archive's size).
    pub work_parent: PathBuf,
    pub retrieval: RetrievalOptions,
    /// Resume a download a failed run left behind (default true).
    pub resume: bool,
}

/// Fetch the archive of `manifest` from `target`, decrypt and check it.
/// A download that fails on the network stays in the work directory and
/// the next run resumes it; one that fails a check is removed.
pub fn fetch_offsite(
    target: &dyn ArchiveTarget,
    manifest: &Manifest,
    key: &SecretKeySource,
    opts: &FetchOptions,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<VerifiedImage> {
    let akey = &manifest.archive.key;
    key_check(key)?;
    let retrieval = ensure_readable(target, akey, &opts.retrieval, &sink)?;
    let stem: String = manifest.archive.sha256.chars().take(16).collect();
    let mut work = WorkArea::open(&opts.work_parent, &format!(".snap-restore-{stem}"))?;
    let part = work.dir.join("archive.sqfs.gpg.part");
    let cipher = work.dir.join("archive.sqfs.gpg");
    let mut checks = Checks {
        manifest: Some(format!("{akey}{MANIFEST_SUFFIX}")),
        retrieval: Some(retrieval),
        ..Checks::default()
    };
    if !cipher.exists() {
        if !opts.resume {
            let _ = fs::remove_file(&part);
        }
        let p = progress("download", Some(manifest.archive.size), &sink);
        let start = Instant::now();
        let got = snap_offsite::download_to_file_limited(
            target,
            akey,
            manifest.archive.version_id.as_deref(),
            &part,
            opts.resume,
            Some(manifest.archive.size),
            &p,
        );
        p.finish();
        let got = match got {
            Ok(d) => d,
            Err(e) => {
                // The bytes that arrived can be kept and resumed.
                work.keep = e.kind().is_transient() || e.kind() == ErrorKind::Interrupted;
                return Err(if work.keep {
                    e.context(format!(
                        "download of {akey} stopped; {} is kept and the next run resumes it",
                        part.display()
                    ))
                } else {
                    e
                });
            }
        };
        let size = fs::metadata(&part)
            .map_err(|e| Error::io_path("reading", &part, e))?
            .len();
        checks.download = Some(DownloadReport {
            resumed_from: got.resumed_from,
            fetched: got.fetched,
            seconds: start.elapsed().as_secs_f64(),
        });
        let size_ok = size == manifest.archive.size;
        let sha_ok = got.sha256 == manifest.archive.sha256;
        checks.ciphertext_size = Some(size_ok);
        checks.ciphertext_sha256 = Some(sha_ok);
        if !(size_ok && sha_ok) {
            let _ = fs::remove_file(&part);
            return Err(integrity(format!(
                "downloaded {akey}: {size} bytes with sha256 {}, the manifest says {} bytes with sha256 {}{}; nothing restored",
                got.sha256,
                manifest.archive.size,
                manifest.archive.sha256,
                if size < manifest.archive.size {
                    " (truncated)"
                } else {
                    ""
                }
            )));
        }
        fs::rename(&part, &cipher).map_err(|e| Error::io_path("renaming", &part, e))?;
    }
    let path = match decrypt_and_check(&cipher, &work, Some(manifest), key, &sink, &mut checks) {
        Ok(p) => p,
        Err(e) => {
            // A verified download stays for another try with the right key.
            work.keep = e.kind() == ErrorKind::InvalidKey;
            return Err(e);
        }
    };
    Ok(VerifiedImage {
        path,
        manifest: Some(manifest.clone()),
        checks,
        work,
    })
}

#[cfg(test)]
mod open_tests {
    use super::{open_regular, sha256_fd};
    use std::fs;

    /// Cold attack on 3625ff8 (docs/reviews/2026-12-01-one-digest-per-byte.md):
    /// the ciphertext, hashed again only when a check failed, was re-opened
    /// by name, so a file swapped in meanwhile was hashed instead (a wrong
    /// cause named), and a FIFO put there hung the restore.
    #[test]
    fn the_file_read_again_is_the_one_opened_and_a_fifo_is_refused_not_waited_on() {
        let d = tempfile::tempdir().unwrap();
        let name = d.path().join("archive.gpg");
        fs::write(&name, b"the archive").unwrap();
        let (f, len) = open_regular(&name, "archive").unwrap();
        assert_eq!(len, 11);
        let other = d.path().join("other");
        fs::write(&other, b"another file").unwrap();
        fs::rename(&other, &name).unwrap();
        let (n, sha) = sha256_fd(&f, 100).unwrap();
        assert_eq!(n, 11);
        // sha256("the archive")
        let want = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(b"the archive"))
        };
        assert_eq!(sha, want, "the descriptor's file, not the name's");
        assert_eq!(sha256_fd(&f, 3).unwrap().0, 3, "bounded");
        fs::remove_file(&name).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&name)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo = name.clone();
        std::thread::spawn(move || tx.send(open_regular(&fifo, "archive").map(|_| ())));
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO waited for a writer");
        let e = got.unwrap_err();
        assert_eq!(e.kind(), snap_core::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("is not a regular file"), "{e}");
    }
}

#[cfg(test)]
mod limit_tests {
    use super::Limited;
    use std::io::Write;

    #[test]
    fn the_image_stops_at_the_manifests_plaintext_size() {
        // A full archive of the right size that decompresses to more (a
        // compression bomb) stops at the manifest's size, not at the disk's.
        let mut out = Limited::new(Vec::new(), Some(5));
        out.write_all(b"abc").unwrap();
        out.write_all(b"de").unwrap();
        let e = out.write_all(b"f").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(out.inner, b"abcde");
        let mut free = Limited::new(Vec::new(), None);
        free.write_all(&[0; 100]).unwrap();
        assert_eq!(free.inner.len(), 100);
    }
}
