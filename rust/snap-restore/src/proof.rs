//! Proof that restores work: the drill (a sample restored from the newest
//! off-site archive with a drill key and compared with history) and the
//! off-site audit (every archive locked long enough, the newest one recent).
//!
//! The drill is split in two so that history and the key never meet:
//! [`sample`] runs where history is (the backup server) and returns the
//! paths and what they must look like; [`check_sample`] runs where the drill
//! key is, on an image fetched and verified there.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use snap_archive::chain::ChainManifest;
use snap_archive::{Manifest, SnapshotEntry};
use snap_core::{Error, ErrorKind, Progress, Result};
use snap_pack::FakeStat;

pub use crate::audit::{AuditPolicy, AuditReport, AuditRow, audit};
use crate::extract::{Selection, extract_image};
use crate::paths::{escape, unescape};

/// One entry as the server had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDesc {
    /// file | dir | symlink | char | block | fifo | socket
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// user/security/trusted xattrs (hex values), as the server had them.
    #[serde(default)]
    pub xattrs: BTreeMap<String, String>,
    pub acl: bool,
    /// Hard-link group: the first path (in order) of this inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "char",
        libc::S_IFBLK => "block",
        libc::S_IFIFO => "fifo",
        _ => "socket",
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io_path("reading", path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io_path("reading", path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// Describe one entry; `fake_super`: read the type, mode, owner and device
/// from rsync's xattr (history), else from the inode (a restored tree).
fn describe_one(
    path: &Path,
    fake_super: bool,
    links: &mut HashMap<(u64, u64), String>,
    rel: &str,
) -> Result<EntryDesc> {
    let m = fs::symlink_metadata(path).map_err(|e| Error::io_path("reading", path, e))?;
    let (mut mode, mut uid, mut gid) = (m.mode(), m.uid(), m.gid());
    let mut rdev = {
        let d = m.rdev();
        (libc::major(d), libc::minor(d))
    };
    let mut names: Vec<String> = Vec::new();
    if !m.file_type().is_symlink()
        && let Ok(list) = xattr::list(path)
    {
        names = list.map(|n| n.to_string_lossy().into_owned()).collect();
    }
    if fake_super
        && let Ok(Some(v)) = xattr::get(path, "user.rsync.%stat")
        && let Some(fs) = FakeStat::parse(&v)
    {
        mode = fs.mode;
        uid = fs.uid;
        gid = fs.gid;
        rdev = (fs.major, fs.minor);
    }
    let kind = kind_name(mode);
    let mut d = EntryDesc {
        kind: kind.into(),
        mode: mode & 0o7777,
        uid,
        gid,
        mtime: None,
        size: None,
        sha256: None,
        target: None,
        rdev: None,
        xattrs: BTreeMap::new(),
        acl: false,
        link: None,
    };
    if matches!(kind, "char" | "block") {
        d.rdev = Some(rdev);
    }
    if kind == "symlink" {
        let target = if m.file_type().is_symlink() {
            fs::read_link(path)
                .map_err(|e| Error::io_path("reading", path, e))?
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            let mut b = Vec::new();
            fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut b))
                .map_err(|e| Error::io_path("reading", path, e))?;
            b
        };
        d.target = Some(escape(&target));
        return Ok(d);
    }
    d.mtime = Some(m.mtime());
    for n in &names {
        let shown = if fake_super {
            if n.starts_with("user.rsync.%") {
                d.acl |= n == "user.rsync.%aacl";
                continue;
            }
            match n.strip_prefix("user.rsync.") {
                Some(rest) if rest.starts_with("security.") || rest.starts_with("trusted.") => {
                    rest.to_string()
                }
                Some(_) => continue,
                None if n.starts_with("user.") => n.clone(),
                None => continue,
            }
        } else {
            if n == "system.posix_acl_access" {
                d.acl = true;
                continue;
            }
            if !(n.starts_with("user.") || n.starts_with("security.") || n.starts_with("trusted."))
                || n.starts_with("user.rsync.")
            {
                continue;
            }
            n.clone()
        };
        if let Ok(Some(v)) = xattr::get(path, n) {
            d.xattrs.insert(shown, hex::encode(v));
        }
    }
    if kind == "file" {
        d.size = Some(m.len());
        d.sha256 = Some(sha256_file(path)?);
        d.link = Some(
            links
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.to_string())
                .clone(),
        );
    }
    Ok(d)
}

/// Describe `rels` (escaped, relative to `root`; directories recursively).
pub fn describe(
    root: &Path,
    rels: &[String],
    fake_super: bool,
) -> Result<BTreeMap<String, EntryDesc>> {
    let mut todo: Vec<Vec<u8>> = Vec::new();
    for r in rels {
        let raw = unescape(r)?;
        let mut stack = vec![raw];
        while let Some(rel) = stack.pop() {
            let path = root.join(std::ffi::OsStr::from_bytes(&rel));
            let m = fs::symlink_metadata(&path).map_err(|e| Error::io_path("reading", &path, e))?;
            if m.is_dir() {
                for ent in fs::read_dir(&path).map_err(|e| Error::io_path("reading", &path, e))? {
                    let ent = ent.map_err(|e| Error::io_path("reading", &path, e))?;
                    let mut child = rel.clone();
                    child.push(b'/');
                    child.extend_from_slice(ent.file_name().as_bytes());
                    stack.push(child);
                }
            }
            todo.push(rel);
        }
    }
    todo.sort();
    todo.dedup();
    let mut links = HashMap::new();
    let mut out = BTreeMap::new();
    for rel in todo {
        let key = escape(&rel);
        let path = root.join(std::ffi::OsStr::from_bytes(&rel));
        let d = describe_one(&path, fake_super, &mut links, &key)?;
        out.insert(key, d);
    }
    Ok(out)
}

/// How big a drill sample is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleOptions {
    /// Random files from the whole snapshot, besides the server.
    pub random_files: usize,
    /// Bytes of file data in the sample, at most.
    pub max_bytes: u64,
    pub seed: Option<u64>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            random_files: 50,
            max_bytes: 256 << 20,
            seed: None,
        }
    }
}

/// A drill sample: paths in one snapshot and what they must look like.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub archive_key: String,
    /// The snapshot's name in the archive.
    pub snapshot: String,
    /// Its name in history now (rotation renames snapshots).
    pub history_snapshot: String,
    /// The server sampled whole (or as much of it as fits).
    pub server: String,
    pub server_complete: bool,
    /// Escaped paths relative to the snapshot (`<server>/<path>`).
    pub paths: Vec<String>,
    pub expected: BTreeMap<String, EntryDesc>,
    pub files: u64,
    pub bytes: u64,
    pub seed: u64,
}

/// What a drill sample needs of a restore point: its key (what restore
/// takes) and its snapshots (names inside the image, servers, times).
#[derive(Debug, Clone)]
pub struct RestorePoint {
    pub key: String,
    pub snapshots: Vec<SnapshotEntry>,
    /// A chain link: its image names snapshots by their time, so history's
    /// snapshots are matched by the name the chain gives them.
    pub chain: bool,
}

impl From<&Manifest> for RestorePoint {
    fn from(m: &Manifest) -> Self {
        RestorePoint {
            key: m.archive.key.clone(),
            snapshots: m.snapshots.clone(),
            chain: false,
        }
    }
}

impl RestorePoint {
    /// A chain link; its manifest must carry its key (one read from
    /// off-site, or written by a snap that records it).
    pub fn chain(m: &ChainManifest) -> Result<Self> {
        let key = m.key.clone().ok_or_else(|| {
            Error::invalid_input(format!(
                "chain {} link {}: the manifest does not name its key; take it from off-site",
                m.chain.id, m.chain.link
            ))
        })?;
        Ok(RestorePoint {
            key,
            snapshots: m.snapshot_entries(),
            chain: true,
        })
    }
}

/// The snapshot of `point` that history still holds: for a full archive
/// matched by the snapshot directory's mtime and servers (rotation renames,
/// never touches them), for a chain link by the name the chain gives it.
/// The newest match; `.sync` (still changing) never matches.
pub fn match_snapshot(history: &Path, point: &RestorePoint) -> Result<(String, String)> {
    let inv = snap_archive::inventory(history, None)?;
    let chain_names: BTreeMap<String, String> = if point.chain {
        snap_pack::chain::snapshots(history)?
            .into_iter()
            .map(|s| (s.dir.to_string_lossy().into_owned(), s.name))
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut snaps: Vec<_> = point
        .snapshots
        .iter()
        .filter(|s| s.name != ".sync")
        .collect();
    snaps.sort_by_key(|s| std::cmp::Reverse(s.mtime));
    for s in snaps {
        if let Some(h) = inv.iter().find(|h| {
            h.name != ".sync"
                && h.servers == s.servers
                && if point.chain {
                    chain_names.get(&h.name) == Some(&s.name)
                } else {
                    h.mtime == s.mtime
                }
        }) {
            return Ok((s.name.clone(), h.name.clone()));
        }
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!(
            "none of the snapshots in archive {} is still in history {} (matched by {} and servers)",
            point.key,
            history.display(),
            if point.chain {
                "their names in the chain"
            } else {
                "time"
            }
        ),
    ))
}

fn regular_files(root: &Path, rel: &[u8], out: &mut Vec<(Vec<u8>, u64)>) -> Result<()> {
    let mut stack = vec![rel.to_vec()];
    while let Some(r) = stack.pop() {
        let path = root.join(std::ffi::OsStr::from_bytes(&r));
        for ent in fs::read_dir(&path).map_err(|e| Error::io_path("reading", &path, e))? {
            let ent = ent.map_err(|e| Error::io_path("reading", &path, e))?;
            let mut child = r.clone();
            child.push(b'/');
            child.extend_from_slice(ent.file_name().as_bytes());
            let p = ent.path();
            let m = fs::symlink_metadata(&p).map_err(|e| Error::io_path("reading", &p, e))?;
            if m.is_dir() {
                stack.push(child);
            } else if m.is_file() {
                let real = xattr::get(&p, "user.rsync.%stat")
                    .ok()
                    .flatten()
                    .and_then(|v| FakeStat::parse(&v))
                    .map(|f| f.mode & libc::S_IFMT == libc::S_IFREG)
                    .unwrap_or(true);
                if real {
                    out.push((child, m.len()));
                }
            }
        }
    }
    Ok(())
}

/// Pick a drill sample from the snapshot of `point` that is still in
/// `history`, and describe it as the server had it.
pub fn sample(history: &Path, point: &RestorePoint, opts: &SampleOptions) -> Result<Sample> {
    let (snapshot, history_snapshot) = match_snapshot(history, point)?;
    let snap_dir = history.join(&history_snapshot);
    let seed = opts.seed.unwrap_or_else(|| rand::thread_rng().r#gen());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let inv = snap_archive::inventory(history, None)?;
    let servers = inv
        .iter()
        .find(|s| s.name == history_snapshot)
        .map(|s| s.servers.clone())
        .unwrap_or_default();
    let server = servers.choose(&mut rng).cloned().ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("snapshot {history_snapshot} holds no server"),
        )
    })?;
    let half = opts.max_bytes / 2;
    let mut files = Vec::new();
    regular_files(&snap_dir, server.as_bytes(), &mut files)?;
    let total: u64 = files.iter().map(|f| f.1).sum();
    let mut paths = Vec::new();
    let mut bytes = 0;
    let mut chosen = std::collections::BTreeSet::new();
    let server_complete = total <= half;
    if server_complete {
        paths.push(escape(server.as_bytes()));
        bytes = total;
        chosen.extend(files.iter().map(|f| f.0.clone()));
    } else {
        files.shuffle(&mut rng);
        for (p, n) in files {
            if bytes + n <= half {
                bytes += n;
                paths.push(escape(&p));
                chosen.insert(p);
            }
        }
    }
    let mut all = Vec::new();
    for s in &servers {
        regular_files(&snap_dir, s.as_bytes(), &mut all)?;
    }
    all.shuffle(&mut rng);
    let mut extra = 0;
    for (p, n) in all {
        if extra >= opts.random_files {
            break;
        }
        if chosen.contains(&p) || bytes + n > opts.max_bytes {
            continue;
        }
        bytes += n;
        extra += 1;
        paths.push(escape(&p));
        chosen.insert(p);
    }
    paths.sort();
    let expected = describe(&snap_dir, &paths, true)?;
    let nfiles = expected.values().filter(|d| d.kind == "file").count() as u64;
    Ok(Sample {
        archive_key: point.key.clone(),
        snapshot,
        history_snapshot,
        server,
        server_complete,
        paths,
        expected,
        files: nfiles,
        bytes,
        seed,
    })
}

/// What a drill found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub archive_key: String,
    pub snapshot: String,
    pub history_snapshot: String,
    pub server: String,
    pub server_complete: bool,
    pub entries_checked: u64,
    pub files_checked: u64,
    pub bytes_checked: u64,
    /// First differences (path: what differs).
    pub mismatches: Vec<String>,
    pub ok: bool,
    pub seconds: f64,
}

/// Compare two descriptions; returns the differences, at most `limit`.
pub fn compare(
    expected: &BTreeMap<String, EntryDesc>,
    got: &BTreeMap<String, EntryDesc>,
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, want) in expected {
        match got.get(p) {
            None => out.push(format!("{p}: missing from the restore")),
            Some(have) if have != want => {
                let a = serde_json::to_value(want).unwrap_or_default();
                let b = serde_json::to_value(have).unwrap_or_default();
                let mut fields = Vec::new();
                if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
                    for k in a
                        .keys()
                        .chain(b.keys())
                        .collect::<std::collections::BTreeSet<_>>()
                    {
                        if a.get(k) != b.get(k) {
                            fields.push(format!(
                                "{k} {} != {}",
                                a.get(k).unwrap_or(&serde_json::Value::Null),
                                b.get(k).unwrap_or(&serde_json::Value::Null)
                            ));
                        }
                    }
                }
                out.push(format!("{p}: {}", fields.join(", ")));
            }
            Some(_) => {}
        }
        if out.len() >= limit {
            return out;
        }
    }
    for p in got.keys() {
        if !expected.contains_key(p) {
            out.push(format!("{p}: in the restore but not in history"));
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// Restore `sample` from the verified `image` into `work` and compare.
pub fn check_sample(image: &Path, sample: &Sample, work: &Path) -> Result<DrillReport> {
    let start = std::time::Instant::now();
    let dest = work.join("drill");
    let sel = Selection::paths(
        sample
            .paths
            .iter()
            .map(|p| {
                let mut v = sample.snapshot.as_bytes().to_vec();
                v.push(b'/');
                v.extend(unescape(p)?);
                Ok(v)
            })
            .collect::<Result<_>>()?,
    );
    let result = (|| {
        extract_image(image, &sel, &dest, false, &Progress::silent("drill"))?;
        describe(&dest.join(&sample.snapshot), &sample.paths, false)
    })();
    let _ = fs::remove_dir_all(&dest);
    let got = result?;
    let mismatches = compare(&sample.expected, &got, 50);
    Ok(DrillReport {
        archive_key: sample.archive_key.clone(),
        snapshot: sample.snapshot.clone(),
        history_snapshot: sample.history_snapshot.clone(),
        server: sample.server.clone(),
        server_complete: sample.server_complete,
        entries_checked: sample.expected.len() as u64,
        files_checked: sample.files,
        bytes_checked: sample.bytes,
        ok: mismatches.is_empty(),
        mismatches,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The record of one `verify` run, kept as `verify-last.json` and appended
/// to `verify.jsonl` in the state directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub run_id: String,
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    /// ok | failed | pending (the drill waits for a retrieval)
    pub result: String,
    pub audit: Option<AuditReport>,
    pub drill: Option<DrillReport>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
}

impl VerifyRecord {
    pub fn start() -> VerifyRecord {
        VerifyRecord {
            run_id: snap_core::record::run_id(),
            started: snap_core::record::now(),
            finished: String::new(),
            seconds: 0.0,
            result: "failed".into(),
            audit: None,
            drill: None,
            error: None,
            error_kind: None,
        }
    }

    /// Decide the result and keep the record under `state_dir`.
    pub fn finish(
        mut self,
        state_dir: Option<&Path>,
        error: Option<&Error>,
    ) -> Result<VerifyRecord> {
        let started = self.started.clone();
        let _ = started;
        self.finished = snap_core::record::now();
        let audit_ok = self.audit.as_ref().is_none_or(|a| a.ok);
        let drill_ok = self.drill.as_ref().is_none_or(|d| d.ok);
        self.result = match error {
            Some(e) if e.kind() == ErrorKind::NotReady && audit_ok => "pending".into(),
            Some(_) => "failed".into(),
            None if audit_ok && drill_ok => "ok".into(),
            None => "failed".into(),
        };
        if let Some(e) = error {
            self.error = Some(e.to_string());
            self.error_kind = Some(e.kind().name().into());
        }
        if let Some(dir) = state_dir {
            snap_core::record::ensure_dir(dir, 0o700)?;
            snap_core::record::write_json(&dir.join("verify-last.json"), &self)?;
            snap_core::record::append_jsonl(&dir.join("verify.jsonl"), &self)?;
        }
        Ok(self)
    }
}

/// Seconds since the epoch (for records).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Where a drill keeps its temporary files.
pub fn drill_work(parent: &Path) -> PathBuf {
    parent.join(format!(".snap-drill-{}", snap_core::record::run_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: &str, mode: u32) -> EntryDesc {
        EntryDesc {
            kind: kind.into(),
            mode,
            uid: 0,
            gid: 0,
            mtime: Some(1),
            size: None,
            sha256: None,
            target: None,
            rdev: None,
            xattrs: BTreeMap::new(),
            acl: false,
            link: None,
        }
    }

    #[test]
    fn compare_names_what_differs() {
        let mut a = BTreeMap::new();
        a.insert("x".to_string(), d("file", 0o644));
        a.insert("y".to_string(), d("dir", 0o755));
        let mut b = a.clone();
        b.get_mut("x").unwrap().mode = 0o600;
        b.remove("y");
        b.insert("z".to_string(), d("file", 0o644));
        let diff = compare(&a, &b, 10);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(diff[0].starts_with("x: mode 420 != 384"), "{diff:?}");
        assert!(diff[1].contains("missing") && diff[2].contains("not in history"));
        assert!(compare(&a, &a, 10).is_empty());
    }
}
