//! Building the next snapshot of one server, never touching an older one.
//!
//! Each rotation builds `<history>/.sync/<minion id>/` afresh:
//!
//! * a server with a new complete push: `rsync --link-dest=<previous
//!   snapshot>` from the jail's newest complete tree into the new directory.
//!   A file whose content *or attributes* changed gets a new inode; an
//!   unchanged one is a hard link. Nothing is ever updated in place, so no
//!   push can change what an older snapshot recorded (an attribute-only
//!   change — chmod, a setuid bit, a new xattr — included). The sending
//!   rsync runs as the jail's account (`snap-as-account`), so root never
//!   opens a path inside a jail;
//! * any other server: its previous snapshot, hard-linked (`cp -al`, or
//!   rsync `--link-dest` where a file already has too many links: rsync then
//!   copies it, so a server with a 65,000-link file cannot break anyone's
//!   rotation).
//!
//! rsnapshot (`link_dest 1`, `sync_first 1`) then only renames: `.sync`
//! becomes `<lowest>.0`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::proc;

/// What a snapshot of one server holds (a walk of its tree).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
pub struct TreeStats {
    /// Every entry, the top directory included (rsync's "Number of files").
    pub entries: u64,
    pub dirs: u64,
    pub files: u64,
    /// Apparent size of the regular files.
    pub bytes: u64,
    /// Inodes only this tree holds (new since the previous snapshot) and
    /// the disk they take.
    pub new_inodes: u64,
    pub new_bytes: u64,
    /// The most links any inode of the tree has.
    pub max_links: u64,
}

/// Walk `root` without following links.
pub fn walk(root: &Path) -> Result<TreeStats> {
    let mut s = TreeStats::default();
    let mut stack = vec![root.to_path_buf()];
    let top = fs::symlink_metadata(root).map_err(|e| Error::io_path("reading", root, e))?;
    count(&mut s, &top);
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| Error::io_path("reading", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io_path("reading", &dir, e))?;
            let m = entry
                .metadata()
                .map_err(|e| Error::io_path("reading", &entry.path(), e))?;
            count(&mut s, &m);
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(s)
}

fn count(s: &mut TreeStats, m: &fs::Metadata) {
    s.entries += 1;
    if m.is_dir() {
        s.dirs += 1;
        s.new_inodes += 1;
        s.new_bytes += m.blocks() * 512;
        return;
    }
    s.max_links = s.max_links.max(m.nlink());
    if m.is_file() {
        s.files += 1;
        s.bytes += m.len();
    }
    if m.nlink() == 1 {
        s.new_inodes += 1;
        s.new_bytes += m.blocks() * 512;
    }
}

/// Free room on the filesystem of a path.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
pub struct Space {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

pub fn measure(path: &Path) -> Result<Space> {
    let st = rustix::fs::statvfs(path).map_err(|e| Error::io_path("measuring", path, e.into()))?;
    let unit = st.f_frsize.max(1);
    Ok(Space {
        total_bytes: st.f_blocks.saturating_mul(unit),
        free_bytes: st.f_bavail.saturating_mul(unit),
        total_inodes: st.f_files,
        free_inodes: st.f_favail,
    })
}

/// What rotation keeps free on the history filesystem for new data.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    #[serde(default = "d_min_free_percent")]
    pub min_free_percent: f64,
    #[serde(default = "d_min_free_bytes")]
    pub min_free_bytes: u64,
    #[serde(default = "d_min_free_percent")]
    pub min_free_inodes_percent: f64,
}

fn d_min_free_percent() -> f64 {
    5.0
}
fn d_min_free_bytes() -> u64 {
    1 << 30
}

impl Default for Reserve {
    fn default() -> Self {
        Reserve {
            min_free_percent: d_min_free_percent(),
            min_free_bytes: d_min_free_bytes(),
            min_free_inodes_percent: d_min_free_percent(),
        }
    }
}

/// What a sync may cost at most.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Need {
    pub bytes: u64,
    pub inodes: u64,
}

impl Reserve {
    /// Why `need` may not be spent out of `space` (None: it may). With
    /// `keep_reserve` false only the room itself is checked (a link copy
    /// of a previous snapshot may use the reserve; new data may not).
    pub fn refuse(&self, space: &Space, need: Need, keep_reserve: bool) -> Option<String> {
        let (rb, ri) = if keep_reserve {
            (
                self.min_free_bytes
                    .max((space.total_bytes as f64 * self.min_free_percent / 100.0) as u64),
                (space.total_inodes as f64 * self.min_free_inodes_percent / 100.0) as u64,
            )
        } else {
            (0, 0)
        };
        let short_bytes = space.free_bytes < need.bytes.saturating_add(rb);
        let short_inodes =
            space.total_inodes > 0 && space.free_inodes < need.inodes.saturating_add(ri);
        if !short_bytes && !short_inodes {
            return None;
        }
        Some(format!(
            "the history filesystem is too full: {} and {} inodes free, this needs up to {} and {} \
             inodes{}",
            human(space.free_bytes),
            space.free_inodes,
            human(need.bytes),
            need.inodes,
            if keep_reserve {
                format!(
                    " and keeps {} and {} inodes free (snap:server:reserve)",
                    human(rb),
                    ri
                )
            } else {
                String::new()
            }
        ))
    }
}

pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// How to run the copies.
#[derive(Debug, Clone)]
pub struct Copier {
    pub rsync: String,
    pub cp: String,
    /// `snap-as-account`: rsync's remote shell that runs the sender as the account.
    pub as_account: PathBuf,
    /// rsync's I/O timeout and the wall-clock cap of one server's copy.
    pub io_timeout: u64,
    pub max_seconds: u64,
}

/// The account a jail belongs to (from the passwd database).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Every account's ids, read once (a lookup per account would scan
/// /etc/passwd once per account: quadratic in the fleet).
pub fn account_ids() -> HashMap<String, Ids> {
    // SAFETY: uzers wraps getpwent; nothing else in this process walks the
    // passwd database concurrently.
    unsafe { uzers::all_users() }
        .filter_map(|u| {
            let name = u.name().to_str()?.to_string();
            Some((
                name,
                Ids {
                    uid: u.uid(),
                    gid: u.primary_group_id(),
                },
            ))
        })
        .collect()
}

fn rsync_base(c: &Copier) -> Command {
    let mut cmd = Command::new(&c.rsync);
    cmd.args([
        "-aHAXS",
        "--numeric-ids",
        "--fake-super",
        "--stats",
        &format!("--timeout={}", c.io_timeout),
    ]);
    cmd
}

fn number_of_files(stdout: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let rest = l.strip_prefix("Number of files:")?;
        rest.split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()
    })
}

fn finish(c: &Copier, what: &str, dest: &Path, out: proc::Output) -> Result<TreeStats> {
    if !out.success() {
        let why = if out.timed_out {
            format!("it ran longer than {}s", c.max_seconds)
        } else {
            format!("rsync exit {}: {}", out.code, out.tail(3))
        };
        let kind = if out.stderr.contains("No space left") || out.stderr.contains("quota") {
            ErrorKind::DiskFull
        } else {
            ErrorKind::Io
        };
        return Err(Error::new(kind, format!("{what} did not complete ({why})")));
    }
    let stats = walk(dest)?;
    match number_of_files(&out.stdout) {
        Some(n) if n == stats.entries => Ok(stats),
        sent => Err(Error::new(
            ErrorKind::Io,
            format!(
                "{what}: the new snapshot holds {} entries, rsync sent {}: not kept",
                stats.entries,
                sent.map_or("an unknown number".into(), |n| n.to_string())
            ),
        )),
    }
}

/// Copy the jail's tree `tree` (read as the account `ids`, confined to
/// `incoming`) into the new directory `dest`, hard-linking what is
/// unchanged in `basis` (the previous snapshot).
pub fn pull(
    c: &Copier,
    ids: Ids,
    incoming: &Path,
    tree: &Path,
    basis: Option<&Path>,
    dest: &Path,
) -> Result<TreeStats> {
    if ids.uid == 0 || ids.gid == 0 {
        return Err(Error::new(
            ErrorKind::Refused,
            "a jail is never read as root",
        ));
    }
    let mut cmd = rsync_base(c);
    cmd.arg("--remote-option=--fake-super")
        .arg(format!(
            "--remote-option=--confine-root={}",
            incoming.display()
        ))
        .arg("-e")
        .arg(format!(
            "{} {}:{}",
            c.as_account.display(),
            ids.uid,
            ids.gid
        ));
    if let Some(b) = basis {
        cmd.arg(format!("--link-dest={}/", b.display()));
    }
    cmd.arg(format!("jail:{}/", tree.display()))
        .arg(format!("{}/", dest.display()));
    let out = proc::run(cmd, Some(Duration::from_secs(c.max_seconds)), None)?;
    finish(c, "the copy from the jail", dest, out)
}

/// Hard-link the previous snapshot `from` into the new directory `dest`.
pub fn link_copy(c: &Copier, from: &Path, dest: &Path) -> Result<TreeStats> {
    let mut cmd = Command::new(&c.cp);
    cmd.arg("-al").arg(from).arg(dest);
    let limit = Some(Duration::from_secs(c.max_seconds));
    let out = proc::run(cmd, limit, None)?;
    if out.success() {
        return walk(dest);
    }
    // Too many links (EMLINK) or anything else: rsync copies what it cannot link.
    remove_tree(dest)?;
    let mut cmd = rsync_base(c);
    cmd.arg(format!("--link-dest={}/", from.display()))
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", dest.display()));
    let out = proc::run(cmd, limit, None)?;
    finish(c, "the copy of the previous snapshot", dest, out)
}

/// Remove a tree under history (root's own), if it exists.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path("reading", path, e)),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| Error::io_path("removing", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io_path("removing", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_counts_what_rsync_counts() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/f"), "12345").unwrap();
        fs::hard_link(t.join("a/f"), t.join("a/b/g")).unwrap();
        let s = walk(&t).unwrap();
        assert_eq!((s.entries, s.dirs, s.files, s.bytes), (5, 3, 2, 10));
        assert_eq!(s.max_links, 2);
        assert_eq!(s.new_inodes, 3, "the linked file is not new");
    }

    #[test]
    fn the_reserve_refuses_new_data_but_not_a_link_copy() {
        let r = Reserve::default();
        let space = Space {
            total_bytes: 100 << 30,
            free_bytes: 6 << 30,
            total_inodes: 1_000_000,
            free_inodes: 60_000,
        };
        let small = Need {
            bytes: 100 << 20,
            inodes: 1000,
        };
        assert!(r.refuse(&space, small, true).is_none());
        let big = Need {
            bytes: 2 << 30,
            inodes: 1000,
        };
        let why = r.refuse(&space, big, true).unwrap();
        assert!(
            why.contains("too full") && why.contains("snap:server:reserve"),
            "{why}"
        );
        assert!(r.refuse(&space, big, false).is_none());
        let inodes = Need {
            bytes: 0,
            inodes: 20_000,
        };
        assert!(r.refuse(&space, inodes, true).is_some());
    }

    #[test]
    fn rsync_stats_give_the_number_of_files() {
        assert_eq!(
            number_of_files("x\nNumber of files: 1,234 (reg: 1,000, dir: 234)\n"),
            Some(1234)
        );
        assert_eq!(number_of_files("nothing"), None);
    }
}
