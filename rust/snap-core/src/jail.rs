//! A push account's jail on the backup server, as root sees it.
//!
//! ```text
//! <jails_dir>/<account>/        root 0711   the account's home; nothing here is the account's
//!     lock                      root 0600   one transfer or one rotation at a time
//!     jail.json                 root 0600   the newest complete tree (snap-receive)
//!     receipts.jsonl[.1]        root 0600   one line per transfer (snap-receive)
//!     transfer.log              account     the receiving rsync's log (counts only)
//!     quota.json                root 0600   the quota snap set (so it can lift it again)
//!     incoming/                 account 0700 the only place the account can write
//!         state/.snap-state     the client's word about its run (informational)
//!         tree.<N>/             one tree per push; the newest complete one stays
//! ```
//!
//! `snap-receive` (root, through sudo) writes `jail.json` and the receipts;
//! the receiving rsync runs as the account. Everything root reads here is
//! opened without following links, its type and owner checked, and read to a
//! bound: whatever a compromised server plants in its jail, root neither
//! follows it nor reads more than a few kilobytes of it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FileType, Mode, OFlags, fstat, openat};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::lock::{self, Lock};

/// Most that root reads of `jail.json`.
pub const MAX_JAIL_JSON: u64 = 64 << 10;
/// Most that root reads of one receipts file (snap-receive keeps ~1 MiB).
pub const MAX_RECEIPTS: u64 = 4 << 20;

/// What `snap-receive` records about the jail's trees (`jail.json`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct JailInfo {
    /// The highest tree number handed out.
    #[serde(default)]
    pub seq: u64,
    /// The newest tree received completely (rsync exit 0 or 24, as root saw it).
    #[serde(default)]
    pub current: Option<u64>,
    /// The client's run id for that push (its word, a label only).
    #[serde(default)]
    pub current_run: Option<String>,
    /// When that push's data transfer ended (unix seconds).
    #[serde(default)]
    pub current_finished: Option<f64>,
    /// A data transfer that started and has not ended (crashed, if the lock is free).
    #[serde(default)]
    pub in_progress: Option<InProgress>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct InProgress {
    pub seq: u64,
    pub started: f64,
}

/// One transfer as `snap-receive` (root) recorded it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Receipt {
    pub started: f64,
    pub finished: f64,
    /// `.` (the state file) or `data`.
    pub dest: String,
    /// The receiving rsync's exit status as root saw it.
    pub exit: i32,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Data transfers: the tree this push went into.
    #[serde(default)]
    pub seq: Option<u64>,
    /// The client's run id (its word: a label, never a verdict).
    #[serde(default)]
    pub run_id: Option<String>,
    /// State transfers: what the client's state file says now.
    #[serde(default)]
    pub state: Option<String>,
    /// Why snap-receive stopped the transfer (wall-clock cap, signal).
    #[serde(default)]
    pub stopped: Option<String>,
}

impl Receipt {
    /// A data transfer whose receiving rsync stored everything it was sent:
    /// exit 0, or 24 (files vanished on the client while it sent them).
    pub fn complete(&self) -> bool {
        matches!(self.exit, 0 | 24)
    }
}

/// Where an account's jail lives and what root may touch in it.
#[derive(Debug, Clone)]
pub struct Jail {
    pub account: String,
    pub home: PathBuf,
}

fn refused(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Refused,
        format!(
            "{} {why}: the jail is not as snap made it; nothing in it was read \
             (highstate the backup server)",
            path.display()
        ),
    )
}

/// Open `name` under `dir` (or `name` itself if `dir` is None) without
/// following a link; require its type and owner. `None` if it does not exist.
pub fn open_checked(
    dir: Option<&OwnedFd>,
    name: &Path,
    kind: FileType,
    owner: u32,
) -> Result<Option<OwnedFd>> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if kind == FileType::Directory {
        flags |= OFlags::DIRECTORY;
    }
    let fd = match dir {
        Some(d) => openat(d, name, flags, Mode::empty()),
        None => openat(rustix::fs::CWD, name, flags, Mode::empty()),
    };
    let fd = match fd {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
            return Err(refused(name, "is a symbolic link or not a directory"));
        }
        Err(e) => return Err(Error::io_path("opening", name, e.into())),
    };
    let st = fstat(&fd).map_err(|e| Error::io_path("reading", name, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != kind {
        return Err(refused(name, format!("is not a {kind:?}")));
    }
    if st.st_uid != owner {
        return Err(refused(
            name,
            format!("is owned by uid {}, not {owner}", st.st_uid),
        ));
    }
    Ok(Some(fd))
}

/// Read at most `limit` bytes of a regular file `name` under `dir` owned by
/// `owner`; an error if it is larger. `None` if it does not exist.
pub fn read_bounded(dir: &OwnedFd, name: &str, owner: u32, limit: u64) -> Result<Option<Vec<u8>>> {
    let Some(fd) = open_checked(Some(dir), Path::new(name), FileType::RegularFile, owner)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io_path("reading", Path::new(name), e))?;
    if data.len() as u64 > limit {
        return Err(refused(
            Path::new(name),
            format!("is larger than {limit} bytes"),
        ));
    }
    Ok(Some(data))
}

impl Jail {
    pub fn new(jails_dir: &Path, account: &str) -> Jail {
        Jail {
            account: account.to_string(),
            home: jails_dir.join(account),
        }
    }

    pub fn incoming(&self) -> PathBuf {
        self.home.join("incoming")
    }

    pub fn tree(&self, seq: u64) -> PathBuf {
        self.incoming().join(format!("tree.{seq}"))
    }

    /// The home, root-owned and not writable by anyone else.
    pub fn open_home(&self) -> Result<OwnedFd> {
        let fd = open_checked(None, &self.home, FileType::Directory, 0)?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{} does not exist", self.home.display()),
            )
        })?;
        let st = fstat(&fd).map_err(|e| Error::io_path("reading", &self.home, e.into()))?;
        if st.st_mode & 0o022 != 0 {
            return Err(refused(
                &self.home,
                format!("has mode {:04o}", st.st_mode & 0o7777),
            ));
        }
        Ok(fd)
    }

    /// `incoming`, owned by the account (uid `uid`), nobody else's.
    pub fn check_incoming(&self, home: &OwnedFd, uid: u32) -> Result<()> {
        let name = Path::new("incoming");
        let fd = open_checked(Some(home), name, FileType::Directory, uid)?
            .ok_or_else(|| refused(&self.incoming(), "is missing"))?;
        let st = fstat(&fd).map_err(|e| Error::io_path("reading", &self.incoming(), e.into()))?;
        if st.st_mode & 0o077 != 0 {
            return Err(refused(
                &self.incoming(),
                format!("has mode {:04o}", st.st_mode & 0o7777),
            ));
        }
        Ok(())
    }

    /// The jail's lock (the one snap-receive holds for every transfer).
    pub fn lock(&self, wait: Duration) -> Result<Option<Lock>> {
        self.open_home()?;
        lock::lock_file(&self.home.join("lock"), wait)
    }

    /// `jail.json` (root's record); the default if there is none yet.
    pub fn info(&self, home: &OwnedFd) -> Result<JailInfo> {
        match read_bounded(home, "jail.json", 0, MAX_JAIL_JSON)? {
            None => Ok(JailInfo::default()),
            Some(text) => serde_json::from_slice(&text).map_err(|e| {
                Error::invalid_input(format!(
                    "{} is not a jail record: {e}",
                    self.home.join("jail.json").display()
                ))
            }),
        }
    }

    /// Every receipt (both generations), oldest first; unreadable lines skipped.
    pub fn receipts(&self, home: &OwnedFd) -> Vec<Receipt> {
        let mut out = Vec::new();
        for name in ["receipts.jsonl.1", "receipts.jsonl"] {
            if let Ok(Some(text)) = read_bounded(home, name, 0, MAX_RECEIPTS) {
                out.extend(
                    text.split(|b| *b == b'\n')
                        .filter_map(|line| serde_json::from_slice::<Receipt>(line).ok()),
                );
            }
        }
        out.sort_by(|a, b| a.started.total_cmp(&b.started));
        out
    }
}

/// What a jail's home may hold besides `incoming` (root's own files, and
/// the log the account's rsync appends to).
const HOME_ENTRIES: [&str; 6] = [
    "lock",
    "quota.json",
    "jail.json",
    "receipts.jsonl",
    "receipts.jsonl.1",
    "transfer.log",
];

/// Make (or repair) the jail of `account` (uid/gid): the home root's, 0711;
/// `incoming` the account's, 0700; nothing else in the home but root's own
/// files (anything an earlier layout or a compromised account left there is
/// removed, never followed). Returns what changed; with `dry_run`, what would.
pub fn prepare(
    jails_dir: &Path,
    account: &str,
    uid: u32,
    gid: u32,
    dry_run: bool,
) -> Result<Vec<String>> {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    if uid == 0 {
        return Err(Error::invalid_input(format!(
            "account {account} has uid 0: a push account is never root"
        )));
    }
    let jail = Jail::new(jails_dir, account);
    let mut changes = Vec::new();
    let mut ensure_dir = |path: &Path, owner: (u32, u32), mode: u32| -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                if (m.uid(), m.gid()) != owner {
                    changes.push(format!(
                        "{}: owner {}:{} -> {}:{}",
                        path.display(),
                        m.uid(),
                        m.gid(),
                        owner.0,
                        owner.1
                    ));
                    if !dry_run {
                        chown(path, Some(owner.0), Some(owner.1))
                            .map_err(|e| Error::io_path("changing owner of", path, e))?;
                    }
                }
                if m.mode() & 0o7777 != mode {
                    changes.push(format!(
                        "{}: mode {:04o} -> {mode:04o}",
                        path.display(),
                        m.mode() & 0o7777
                    ));
                    if !dry_run {
                        fs::set_permissions(path, fs::Permissions::from_mode(mode))
                            .map_err(|e| Error::io_path("changing mode of", path, e))?;
                    }
                }
                return Ok(());
            }
            Ok(_) => {
                changes.push(format!("{}: not a directory, removed", path.display()));
                if !dry_run {
                    fs::remove_file(path).map_err(|e| Error::io_path("removing", path, e))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path("reading", path, e)),
        }
        changes.push(format!(
            "{}: created ({}:{} {mode:04o})",
            path.display(),
            owner.0,
            owner.1
        ));
        if !dry_run {
            fs::create_dir(path).map_err(|e| Error::io_path("creating", path, e))?;
            chown(path, Some(owner.0), Some(owner.1))
                .map_err(|e| Error::io_path("changing owner of", path, e))?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io_path("changing mode of", path, e))?;
        }
        Ok(())
    };
    ensure_dir(&jail.home, (0, 0), 0o711)?;
    ensure_dir(&jail.incoming(), (uid, gid), 0o700)?;
    let entries = match fs::read_dir(&jail.home) {
        Ok(e) => e,
        Err(e) if dry_run && e.kind() == std::io::ErrorKind::NotFound => return Ok(changes),
        Err(e) => return Err(Error::io_path("listing", &jail.home, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io_path("listing", &jail.home, e))?;
        let name = entry.file_name();
        let path = entry.path();
        let m = entry
            .metadata()
            .map_err(|e| Error::io_path("reading", &path, e))?;
        let known = HOME_ENTRIES.iter().any(|n| name == *n);
        let keep = name == "incoming"
            || (known && (name == "transfer.log" || (m.uid() == 0 && m.is_file())));
        if keep {
            continue;
        }
        changes.push(format!("{}: removed (not snap's)", path.display()));
        if !dry_run {
            let r = if m.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(|e| Error::io_path("removing", &path, e))?;
        }
    }
    Ok(changes)
}

/// Receipts of data transfers that completed after tree `after` up to `upto`.
pub fn pushes_between(receipts: &[Receipt], after: Option<u64>, upto: u64) -> Vec<&Receipt> {
    receipts
        .iter()
        .filter(|r| r.dest == "data" && r.complete())
        .filter(|r| {
            r.seq
                .is_some_and(|s| s <= upto && after.is_none_or(|a| s > a))
        })
        .collect()
}

/// Whether `name` is a plain file name (no separators, not `.`/`..`).
pub fn plain_name(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn home(dir: &Path) -> Jail {
        let j = Jail::new(dir, "snap-web1");
        fs::create_dir_all(j.incoming()).unwrap();
        fs::set_permissions(&j.home, fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(j.incoming(), fs::Permissions::from_mode(0o700)).unwrap();
        j
    }

    fn me() -> u32 {
        rustix::process::getuid().as_raw()
    }

    #[test]
    fn jail_files_are_read_bounded_and_never_through_links() {
        if me() != 0 {
            return; // the owner checks need the files to be root's
        }
        let dir = tempfile::tempdir().unwrap();
        let j = home(dir.path());
        let h = j.open_home().unwrap();
        assert_eq!(j.info(&h).unwrap(), JailInfo::default());
        fs::write(
            j.home.join("jail.json"),
            r#"{"seq": 3, "current": 2, "current_run": "r2"}"#,
        )
        .unwrap();
        assert_eq!(j.info(&h).unwrap().current, Some(2));
        // A sparse 1 GiB record is refused after reading 64 KiB + 1 byte.
        let f = fs::File::create(j.home.join("jail.json")).unwrap();
        f.set_len(1 << 30).unwrap();
        let e = j.info(&h).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        // A link is never followed.
        fs::remove_file(j.home.join("jail.json")).unwrap();
        symlink("/etc/shadow", j.home.join("jail.json")).unwrap();
        let e = j.info(&h).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        // A fifo would block a plain open: it is refused without blocking.
        fs::remove_file(j.home.join("jail.json")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            j.home.join("jail.json"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(j.info(&h).is_err());
    }

    #[test]
    fn a_home_or_incoming_that_is_not_as_made_is_refused() {
        if me() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let j = home(dir.path());
        let h = j.open_home().unwrap();
        // incoming owned by root, not by the account (uid 4242)
        let e = j.check_incoming(&h, 4242).unwrap_err();
        assert!(e.to_string().contains("not 4242"), "{e}");
        fs::set_permissions(&j.home, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(j.open_home().unwrap_err().to_string().contains("mode"));
        // incoming swapped for a link into another jail
        fs::set_permissions(&j.home, fs::Permissions::from_mode(0o711)).unwrap();
        fs::remove_dir(j.incoming()).unwrap();
        symlink(dir.path(), j.incoming()).unwrap();
        let e = j.check_incoming(&h, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    }

    #[test]
    fn pushes_between_counts_complete_data_transfers() {
        let r = |seq: u64, exit: i32| Receipt {
            started: seq as f64,
            finished: seq as f64 + 1.0,
            dest: "data".into(),
            exit,
            files: 1,
            bytes: 10,
            seq: Some(seq),
            run_id: None,
            state: None,
            stopped: None,
        };
        let all = vec![r(1, 0), r(2, 23), r(3, 0), r(4, 0)];
        let got: Vec<u64> = pushes_between(&all, Some(1), 3)
            .iter()
            .map(|r| r.seq.unwrap())
            .collect();
        assert_eq!(got, vec![3]);
        assert_eq!(pushes_between(&all, None, 4).len(), 3);
    }
}
