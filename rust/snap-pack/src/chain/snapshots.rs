#![forbid(unsafe_code)]
//! Naming rsnapshot's snapshots by their time.
//!
//! rsnapshot renames snapshot directories on every rotation (`recent.0` →
//! `recent.1` → … → `daily.0`), so a chain image names each snapshot by its
//! time instead: `2026-11-30T040012Z`. The time is the `time` field (RFC
//! 3339) of the snapshot's root-owned `.snapshot.json`, written when the
//! snapshot was taken; without one, the snapshot directory's modification
//! time (rsnapshot touches the lowest level's `.0` at each rotation, and
//! renames keep it). Two snapshots in the same second are named to the
//! nanosecond (`2026-11-30T040012.000000123Z`); the same nanosecond is an
//! error.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use jiff::Timestamp;
use rustix::fs::{Mode, OFlags};
use snap_core::{Error, ErrorKind, Result};

use crate::util::{io_err, show};
use crate::walk;

/// The file in a snapshot directory that records when it was taken.
pub const STAMP: &str = ".snapshot.json";
/// Largest stamp read.
const STAMP_MAX: u64 = 64 * 1024;

/// Where a snapshot's time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// `.snapshot.json`.
    Stamp,
    /// The directory's modification time.
    Mtime,
}

/// One snapshot of history and its name in a chain image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its directory in history (`daily.3`).
    pub dir: OsString,
    /// Its name in the image (`2026-11-30T040012Z`).
    pub name: String,
    /// Unix time: seconds, nanoseconds.
    pub time: (i64, u32),
    pub source: TimeSource,
}

/// Whether `name` is a snapshot directory name: `<level>.<n>`.
fn is_snapshot_name(name: &[u8]) -> bool {
    let Some(dot) = name.iter().rposition(|b| *b == b'.') else {
        return false;
    };
    let (level, n) = (&name[..dot], &name[dot + 1..]);
    !level.is_empty()
        && !n.is_empty()
        && level
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        && n.iter().all(u8::is_ascii_digit)
}

/// Format a time as an image name, to the second or to the nanosecond.
pub fn time_name(time: (i64, u32), nanos: bool) -> Result<String> {
    let t = Timestamp::new(time.0, time.1 as i32)
        .map_err(|e| Error::invalid_input(format!("time {}.{:09}: {e}", time.0, time.1)))?;
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    Ok(if nanos {
        format!("{}.{:09}Z", z.strftime("%Y-%m-%dT%H%M%S"), time.1)
    } else {
        z.strftime("%Y-%m-%dT%H%M%SZ").to_string()
    })
}

/// Read a snapshot's `.snapshot.json` if it has one: opened without
/// following links, a regular file of root's (or ours), at most 64 KiB.
fn read_stamp(dir: &File, path: &Path) -> Result<Option<(i64, u32)>> {
    let name: &CStr = c".snapshot.json";
    let stamp = path.join(STAMP);
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_err("opening", &stamp, e.into())),
    };
    let f = File::from(fd);
    let st = walk::stat_fd(&f).map_err(|e| io_err("reading", &stamp, e))?;
    let me = rustix::process::geteuid().as_raw();
    if !st.is_file() || (st.uid != 0 && st.uid != me) || st.size > STAMP_MAX {
        return Err(Error::invalid_input(format!(
            "{}: not a regular file of root's of at most {STAMP_MAX} bytes",
            show(&stamp)
        )));
    }
    let mut text = Vec::new();
    f.take(STAMP_MAX)
        .read_to_end(&mut text)
        .map_err(|e| io_err("reading", &stamp, e))?;
    let bad = |why: String| Error::invalid_input(format!("{}: {why}", show(&stamp)));
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(s) = v.get("time").and_then(|t| t.as_str()) else {
        return Err(bad("no \"time\" string".into()));
    };
    let t: Timestamp = s
        .parse()
        .map_err(|e| bad(format!("time {s:?} is not RFC 3339: {e}")))?;
    Ok(Some((t.as_second(), t.subsec_nanosecond() as u32)))
}

/// The snapshots in `history`, oldest first, with their image names.
/// Directories other than `<level>.<n>` (`.sync`, `_delete.*`) are not
/// snapshots.
pub fn snapshots(history: &Path) -> Result<Vec<Snapshot>> {
    let root = walk::open_dir_path(history).map_err(|e| io_err("opening history", history, e))?;
    let mut found = Vec::new();
    for name in walk::list(&root).map_err(|e| io_err("listing", history, e))? {
        if !is_snapshot_name(name.to_bytes()) {
            continue;
        }
        let path = history.join(OsStr::from_bytes(name.to_bytes()));
        let st = walk::stat_at(&root, &name).map_err(|e| io_err("reading", &path, e))?;
        if !st.is_dir() {
            continue;
        }
        let dir = walk::open_dir_at(&root, &name).map_err(|e| io_err("opening", &path, e))?;
        let (time, source) = match read_stamp(&dir, &path)? {
            Some(t) => (t, TimeSource::Stamp),
            None => ((st.mtime, st.mtime_nsec), TimeSource::Mtime),
        };
        found.push((OsStr::from_bytes(name.to_bytes()).to_owned(), time, source));
    }
    if found.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("history {} holds no snapshot (<level>.<n>)", show(history)),
        ));
    }
    found.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let mut out: Vec<Snapshot> = Vec::with_capacity(found.len());
    for (i, (dir, time, source)) in found.iter().enumerate() {
        let same_second = |j: usize| found.get(j).is_some_and(|o| o.1.0 == time.0);
        let nanos = (i > 0 && same_second(i - 1)) || same_second(i + 1);
        if i > 0 && found[i - 1].1 == *time {
            return Err(Error::invalid_input(format!(
                "snapshots {} and {} have the same time ({}); a chain image cannot name them apart",
                show(&history.join(&found[i - 1].0)),
                show(&history.join(dir)),
                time_name(*time, true)?
            )));
        }
        out.push(Snapshot {
            dir: dir.clone(),
            name: time_name(*time, nanos)?,
            time: *time,
            source: *source,
        });
    }
    Ok(out)
}

/// Image name → snapshot directory, as the pack walks them.
pub(crate) fn name_map(snaps: &[Snapshot]) -> BTreeMap<CString, CString> {
    snaps
        .iter()
        .map(|s| {
            (
                CString::new(s.name.as_bytes()).expect("no NUL in a time"),
                CString::new(s.dir.as_bytes()).expect("no NUL in a file name"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_times() {
        assert!(is_snapshot_name(b"daily.0"));
        assert!(is_snapshot_name(b"recent.12"));
        assert!(!is_snapshot_name(b".sync"));
        assert!(!is_snapshot_name(b"_delete.123x"));
        assert!(!is_snapshot_name(b"daily"));
        assert!(!is_snapshot_name(b"a b.1"));
        assert_eq!(
            time_name((1_796_011_212, 5), false).unwrap(),
            "2026-11-30T040012Z"
        );
        assert_eq!(
            time_name((1_796_011_212, 5), true).unwrap(),
            "2026-11-30T040012.000000005Z"
        );
    }
}
