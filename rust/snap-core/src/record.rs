//! Run records: what a run did, written so a crash never leaves half a file.
//!
//! The last run of a kind is a JSON file replaced atomically; every run is
//! also appended as one line to a JSON-lines log.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use jiff::{Timestamp, tz::TimeZone};
use serde::Serialize;

use crate::error::{Error, Result};

/// Now, as RFC 3339 UTC with whole seconds: `2026-11-22T02:17:00Z`.
pub fn now() -> String {
    format_time(Timestamp::now())
}

pub fn format_time(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Unix seconds as RFC 3339 UTC: `2026-11-22T02:17:00Z`.
/// Unix seconds of an RFC 3339 time (None if it is not one).
pub fn parse_unix(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(|t| t.as_second())
}

pub fn format_unix(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| format!("@{secs}"), format_time)
}

/// A run id: `20261122T021700Z-<pid>`, sortable and unique per host.
pub fn run_id() -> String {
    let t = Timestamp::now().to_zoned(TimeZone::UTC);
    format!("{}-{}", t.strftime("%Y%m%dT%H%M%SZ"), std::process::id())
}

/// Serialize `value` to `path` atomically (temp file in the same directory,
/// fsync, rename), mode 0644.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::internal(format!("encoding {}: {e}", path.display())))?;
    text.push('\n');
    write_atomic(path, text.as_bytes(), 0o644)
}

/// Write bytes to `path` atomically with `mode`, replacing what was there.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_via_temp(path, bytes, mode, true)
}

/// Write bytes to `path` atomically with `mode`, never over an existing
/// file: fails with `AlreadyExists` instead.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_via_temp(path, bytes, mode, false)
}

/// Write a temp file in the same directory (mode set explicitly, whatever the
/// umask), fsync it, then rename it over `path` (`replace`) or hard-link it
/// into place (never overwriting). The temp file never outlives the call.
fn write_via_temp(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid_input(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io_path("creating", &tmp, e))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io_path("setting mode of", &tmp, e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io_path("writing", &tmp, e))?;
        if replace {
            fs::rename(&tmp, path).map_err(|e| Error::io_path("replacing", path, e))
        } else {
            fs::hard_link(&tmp, path).map_err(|e| Error::io_path("creating", path, e))
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Append `value` as one JSON line to `path` (created 0644).
pub fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut line = serde_json::to_string(value)
        .map_err(|e| Error::internal(format!("encoding {}: {e}", path.display())))?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io_path("opening", path, e))?;
    // One write(2) with O_APPEND: concurrent writers never interleave lines.
    f.write_all(line.as_bytes())
        .map_err(|e| Error::io_path("appending to", path, e))
}

/// Create `dir` (and parents) with `mode` if missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| Error::io_path("creating directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ids_are_utc_and_sortable() {
        let t = now();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
        let id = run_id();
        assert!(id.contains("T") && id.contains("Z-"), "{id}");
    }

    #[test]
    fn atomic_write_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("last.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        write_json(&p, &serde_json::json!({"a": 2})).unwrap();
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["a"], 2);
        let log = dir.path().join("log.jsonl");
        append_jsonl(&log, &serde_json::json!({"n": 1})).unwrap();
        append_jsonl(&log, &serde_json::json!({"n": 2})).unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 2);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp files left"
        );
    }
}
