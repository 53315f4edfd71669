//! Staging and moving into place.
//!
//! Everything a restore produces is first built in a root-only staging
//! directory on the destination's file system; only a complete, verified
//! tree is moved into the destination, by `rename(2)`:
//!
//! - a destination that does not exist yet is the staged tree renamed (one
//!   atomic step);
//! - into an existing directory, entries are merged. Without `overwrite`
//!   every conflict is found before anything moves, and the restore fails
//!   naming them (nothing is moved). With `overwrite`, files are replaced
//!   atomically (rename over them) and existing directories get the
//!   restored owner, mode and mtime; a directory is never deleted to make
//!   room for a file.
//!
//! Directories of the destination are opened with `O_NOFOLLOW` one level at
//! a time, and entries moved with `renameat`: a symlink planted in the
//! destination is replaced or reported, never followed.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use rustix::process::{Gid, Uid};
use serde::Serialize;
use snap_core::{Error, ErrorKind, Result};

/// A root-only directory removed when dropped (also on failure).
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// A staging directory on the file system where `dest` is or will be:
    /// inside `dest` if it exists, else next to it.
    pub fn for_dest(dest: &Path) -> Result<Staging> {
        let name = format!(
            ".snap-restore-stage-{}-{:08x}",
            snap_core::record::run_id(),
            rand::random::<u32>()
        );
        let parent = match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => dest.to_path_buf(),
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "restore destination {} exists and is not a directory",
                        dest.display()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = match dest.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                fs::create_dir_all(&parent).map_err(|e| Error::io_path("creating", &parent, e))?;
                parent
            }
            Err(e) => return Err(Error::io_path("checking", dest, e)),
        };
        Staging::create_in(&parent, &name)
    }

    /// A fresh root-only directory `name` in `parent`.
    pub fn create_in(parent: &Path, name: &str) -> Result<Staging> {
        let dir = parent.join(name);
        fs::create_dir(&dir)
            .map_err(|e| Error::io_path("creating the staging directory", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io_path("securing", &dir, e))?;
        Ok(Staging { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstallSummary {
    /// Entries (files or whole trees) moved in where nothing was.
    pub moved: u64,
    /// Files (or symlinks...) replaced (`overwrite`).
    pub replaced: u64,
    /// Existing directories merged into.
    pub merged_dirs: u64,
    /// The staged tree became the destination in one rename.
    pub renamed_whole: bool,
}

fn cname(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).expect("names from the file system have no NUL")
}

fn open_dir(parent: &OwnedFd, name: &CString, shown: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name.as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io_path("opening", shown, e.into()))
}

fn open_top(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io_path("opening", path, e.into()))
}

fn entries(dir: &OwnedFd, shown: &Path) -> Result<Vec<CString>> {
    let mut out = Vec::new();
    for ent in
        rustix::fs::Dir::read_from(dir).map_err(|e| Error::io_path("reading", shown, e.into()))?
    {
        let ent = ent.map_err(|e| Error::io_path("reading", shown, e.into()))?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(CString::from(ent.file_name()));
        }
    }
    out.sort();
    Ok(out)
}

fn kind_at(dir: &OwnedFd, name: &CString, shown: &Path) -> Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(Error::io_path("checking", shown, e.into())),
    }
}

fn is_dir(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Where staged entries collide with the destination. Entries above
/// `keep` (the destination's own parents of what was asked, see
/// [`install_kept`]) must be real directories where they exist.
fn conflicts(
    src: &OwnedFd,
    dst: &OwnedFd,
    src_path: &Path,
    dst_path: &Path,
    overwrite: bool,
    keep: usize,
    out: &mut Vec<String>,
) -> Result<()> {
    for name in entries(src, src_path)? {
        let os = OsStr::from_bytes(name.to_bytes());
        let (sp, dp) = (src_path.join(os), dst_path.join(os));
        let Some(d) = kind_at(dst, &name, &dp)? else {
            continue;
        };
        let s = rustix::fs::statat(src, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io_path("checking", &sp, e.into()))?;
        match (is_dir(&s), is_dir(&d)) {
            (true, true) => {
                let (sf, df) = (open_dir(src, &name, &sp)?, open_dir(dst, &name, &dp)?);
                conflicts(&sf, &df, &sp, &dp, overwrite, keep.saturating_sub(1), out)?;
            }
            (true, false) if keep > 1 => out.push(format!(
                "{} (a parent of the restored path that is not a directory: never followed or replaced)",
                dp.display()
            )),
            (false, true) => out.push(format!("{} (a directory is in the way)", dp.display())),
            _ if !overwrite => out.push(format!("{} exists", dp.display())),
            _ => {}
        }
        if out.len() >= 20 {
            break;
        }
    }
    Ok(())
}

fn merge(
    src: &OwnedFd,
    dst: &OwnedFd,
    src_path: &Path,
    dst_path: &Path,
    overwrite: bool,
    keep: usize,
    sum: &mut InstallSummary,
) -> Result<()> {
    for name in entries(src, src_path)? {
        let os = OsStr::from_bytes(name.to_bytes());
        let (sp, dp) = (src_path.join(os), dst_path.join(os));
        let s = rustix::fs::statat(src, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io_path("checking", &sp, e.into()))?;
        match kind_at(dst, &name, &dp)? {
            None => {
                rustix::fs::renameat_with(
                    src,
                    name.as_c_str(),
                    dst,
                    name.as_c_str(),
                    RenameFlags::NOREPLACE,
                )
                .map_err(|e| Error::io_path("moving the restored entry to", &dp, e.into()))?;
                sum.moved += 1;
            }
            Some(d) if is_dir(&s) && is_dir(&d) => {
                let (sf, df) = (open_dir(src, &name, &sp)?, open_dir(dst, &name, &dp)?);
                merge(&sf, &df, &sp, &dp, overwrite, keep.saturating_sub(1), sum)?;
                if overwrite && keep <= 1 {
                    copy_dir_attrs(&s, &df, &dp)?;
                }
                sum.merged_dirs += 1;
            }
            Some(d) if overwrite && !is_dir(&d) && !(is_dir(&s) && keep > 1) => {
                if is_dir(&s) {
                    // A file or symlink where a directory belongs.
                    rustix::fs::unlinkat(dst, name.as_c_str(), AtFlags::empty())
                        .map_err(|e| Error::io_path("removing", &dp, e.into()))?;
                }
                rustix::fs::renameat(src, name.as_c_str(), dst, name.as_c_str())
                    .map_err(|e| Error::io_path("replacing", &dp, e.into()))?;
                sum.replaced += 1;
            }
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} appeared in the destination while restoring; not replacing it",
                        dp.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn copy_dir_attrs(st: &rustix::fs::Stat, dst: &OwnedFd, shown: &Path) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            dst,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| Error::io_path("changing owner of", shown, e.into()))?;
    }
    rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))
        .map_err(|e| Error::io_path("changing mode of", shown, e.into()))?;
    let t = Timespec {
        tv_sec: st.st_mtime as _,
        tv_nsec: st.st_mtime_nsec as _,
    };
    rustix::fs::futimens(
        dst,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
    .map_err(|e| Error::io_path("setting times of", shown, e.into()))
}

/// Move the finished tree `content` into `dest` (see the module docs).
pub fn install(content: &Path, dest: &Path, overwrite: bool) -> Result<InstallSummary> {
    install_kept(content, dest, overwrite, 0)
}

/// [`install`], keeping the top `keep` levels as they are: `dest` itself
/// (level 0) and the directories below it down to level `keep - 1` are
/// merged into but never get the staged owner, mode or times, and one that
/// exists as anything but a real directory is an error (never followed,
/// never replaced). A restore of `/etc/nginx` onto `/` keeps `/` and `/etc`.
pub fn install_kept(
    content: &Path,
    dest: &Path,
    overwrite: bool,
    keep: usize,
) -> Result<InstallSummary> {
    let mut sum = InstallSummary::default();
    let meta = fs::symlink_metadata(content).map_err(|e| Error::io_path("reading", content, e))?;
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                content,
                rustix::fs::CWD,
                dest,
                RenameFlags::NOREPLACE,
            )
            .map_err(|e| Error::io_path("moving the restored tree to", dest, e.into()))?;
            sum.renamed_whole = true;
            sum.moved = 1;
            return Ok(sum);
        }
        Err(e) => return Err(Error::io_path("checking", dest, e)),
        Ok(d) if !d.is_dir() => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "restore destination {} exists and is not a directory",
                    dest.display()
                ),
            ));
        }
        Ok(_) => {}
    }
    if !meta.is_dir() {
        // One file restored into an existing directory: it keeps its name.
        let name = content
            .file_name()
            .ok_or_else(|| Error::internal("staged file has no name"))?;
        let src_dir = open_top(content.parent().unwrap_or(Path::new(".")))?;
        let dst_dir = open_top(dest)?;
        let n = cname(name);
        let dp = dest.join(name);
        match kind_at(&dst_dir, &n, &dp)? {
            None => {
                rustix::fs::renameat_with(
                    &src_dir,
                    n.as_c_str(),
                    &dst_dir,
                    n.as_c_str(),
                    RenameFlags::NOREPLACE,
                )
                .map_err(|e| Error::io_path("moving the restored file to", &dp, e.into()))?;
                sum.moved = 1;
            }
            Some(d) if overwrite && !is_dir(&d) => {
                rustix::fs::renameat(&src_dir, n.as_c_str(), &dst_dir, n.as_c_str())
                    .map_err(|e| Error::io_path("replacing", &dp, e.into()))?;
                sum.replaced = 1;
            }
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} exists; nothing was restored (use overwrite to replace it)",
                        dp.display()
                    ),
                ));
            }
        }
        return Ok(sum);
    }
    let src = open_top(content)?;
    let dst = open_top(dest)?;
    let mut found = Vec::new();
    conflicts(&src, &dst, content, dest, overwrite, keep, &mut found)?;
    if !found.is_empty() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "nothing was restored: {} entr{} in {} would be replaced ({}{}); restore into an empty directory or allow overwriting (a parent that is not a directory is never replaced: fix it on the server first)",
                found.len(),
                if found.len() == 1 { "y" } else { "ies" },
                dest.display(),
                found.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if found.len() > 5 { ", ..." } else { "" }
            ),
        ));
    }
    merge(&src, &dst, content, dest, overwrite, keep, &mut sum)?;
    if overwrite && keep == 0 {
        let st =
            rustix::fs::fstat(&src).map_err(|e| Error::io_path("reading", content, e.into()))?;
        let _ = meta.mode();
        copy_dir_attrs(&st, &dst, dest)?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn new_destination_is_one_rename() {
        let t = tempfile::tempdir().unwrap();
        let staged = t.path().join("staged");
        fs::create_dir_all(staged.join("a")).unwrap();
        fs::write(staged.join("a/f"), b"x").unwrap();
        let dest = t.path().join("dest");
        let s = install(&staged, &dest, false).unwrap();
        assert!(s.renamed_whole);
        assert_eq!(fs::read(dest.join("a/f")).unwrap(), b"x");
        assert!(!staged.exists());
    }

    #[test]
    fn conflicts_are_reported_before_anything_moves() {
        let t = tempfile::tempdir().unwrap();
        let staged = t.path().join("staged");
        fs::create_dir_all(staged.join("etc")).unwrap();
        fs::write(staged.join("etc/new"), b"new").unwrap();
        fs::write(staged.join("etc/passwd"), b"restored").unwrap();
        let dest = t.path().join("dest");
        fs::create_dir_all(dest.join("etc")).unwrap();
        fs::write(dest.join("etc/passwd"), b"live").unwrap();
        let e = install(&staged, &dest, false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("etc/passwd"), "{e}");
        assert!(
            !dest.join("etc/new").exists(),
            "something moved before the conflict was found"
        );
        let s = install(&staged, &dest, true).unwrap();
        assert_eq!((s.moved, s.replaced, s.merged_dirs), (1, 1, 1));
        assert_eq!(fs::read(dest.join("etc/passwd")).unwrap(), b"restored");
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let staged = t.path().join("staged");
        fs::create_dir_all(staged.join("home")).unwrap();
        fs::write(staged.join("home/file"), b"restored").unwrap();
        let dest = t.path().join("dest");
        fs::create_dir(&dest).unwrap();
        symlink(&outside, dest.join("home")).unwrap();
        // Without overwrite: a conflict.
        assert!(install(&staged, &dest, false).is_err());
        install(&staged, &dest, true).unwrap();
        assert!(fs::symlink_metadata(dest.join("home")).unwrap().is_dir());
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "wrote through the symlink"
        );
    }

    #[test]
    fn a_directory_is_never_deleted_for_a_file() {
        let t = tempfile::tempdir().unwrap();
        let staged = t.path().join("staged");
        fs::create_dir(&staged).unwrap();
        fs::write(staged.join("x"), b"file").unwrap();
        let dest = t.path().join("dest");
        fs::create_dir_all(dest.join("x/keep")).unwrap();
        let e = install(&staged, &dest, true).unwrap_err();
        assert!(e.to_string().contains("a directory is in the way"), "{e}");
        assert!(dest.join("x/keep").is_dir());
    }

    #[test]
    fn staging_is_root_only_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("new");
        let path;
        {
            let s = Staging::for_dest(&dest).unwrap();
            path = s.path().to_path_buf();
            assert_eq!(path.parent().unwrap(), t.path());
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        assert!(!path.exists() && !dest.exists());
    }
}
