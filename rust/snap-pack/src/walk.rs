#![forbid(unsafe_code)]
//! Directory-relative file system access for the packer: every lookup is
//! one path component below an open directory (`statat`, `openat`), so a
//! deep history tree costs no repeated path walks.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};

/// The parts of `struct statx` the packer uses.
#[derive(Debug, Clone, Copy)]
pub struct St {
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Birth time, where the file system records it.
    pub btime: Option<(i64, u32)>,
    pub dev: u64,
    pub ino: u64,
}

impl St {
    fn from(s: rustix::fs::Statx) -> St {
        let btime = (s.stx_mask & StatxFlags::BTIME.bits() != 0)
            .then_some((s.stx_btime.tv_sec, s.stx_btime.tv_nsec));
        St {
            mode: s.stx_mode as u32,
            nlink: s.stx_nlink as u64,
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            rdev: rustix::fs::makedev(s.stx_rdev_major, s.stx_rdev_minor),
            mtime: s.stx_mtime.tv_sec,
            mtime_nsec: s.stx_mtime.tv_nsec,
            btime,
            dev: rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
        }
    }

    pub fn fmt(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.fmt() == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.fmt() == libc::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.fmt() == libc::S_IFLNK
    }

    /// Hard-linkable (not a directory) with more than one link.
    pub fn linked(&self) -> bool {
        !self.is_dir() && self.nlink > 1
    }
}

const WANT: StatxFlags = StatxFlags::BASIC_STATS.union(StatxFlags::BTIME);

pub fn stat_path(path: &Path) -> io::Result<St> {
    Ok(St::from(rustix::fs::statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        WANT,
    )?))
}

pub fn stat_at(dir: &File, name: &CStr) -> io::Result<St> {
    Ok(St::from(rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
        WANT,
    )?))
}

/// The status of an open file.
pub fn stat_fd(f: &File) -> io::Result<St> {
    Ok(St::from(rustix::fs::statx(
        f,
        c"",
        AtFlags::EMPTY_PATH,
        WANT,
    )?))
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

pub fn open_dir_path(path: &Path) -> io::Result<File> {
    Ok(File::from(rustix::fs::open(
        path,
        DIR_FLAGS,
        Mode::empty(),
    )?))
}

pub fn open_dir_at(dir: &File, name: &CStr) -> io::Result<File> {
    Ok(File::from(rustix::fs::openat(
        dir,
        name,
        DIR_FLAGS,
        Mode::empty(),
    )?))
}

/// Open a regular file for reading, without following a symlink and, when
/// allowed (owner or CAP_FOWNER), without updating its atime.
pub fn open_file_at(dir: &File, name: &CStr) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::PERM) => Ok(File::from(rustix::fs::openat(
            dir,
            name,
            flags,
            Mode::empty(),
        )?)),
        Err(e) => Err(e.into()),
    }
}

pub fn readlink_at(dir: &File, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// The names in a directory, sorted by their bytes (SquashFS's order).
pub fn list(dir: &File) -> io::Result<Vec<CString>> {
    Ok(entries(dir)?.into_iter().map(|e| e.name).collect())
}

/// What a directory listing says an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// Anything but a directory.
    Other,
    /// The file system did not say.
    Unknown,
}

/// A directory entry: name, inode number and kind as the listing gives
/// them (no stat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ent {
    pub name: CString,
    pub ino: u64,
    pub kind: Kind,
}

impl Ent {
    /// An entry known only by its name.
    pub fn named(name: CString) -> Ent {
        Ent {
            name,
            ino: 0,
            kind: Kind::Unknown,
        }
    }
}

/// The entries of a directory, sorted by name bytes (SquashFS's order).
/// Reads from the descriptor's current position: a freshly opened one.
pub fn entries(dir: &File) -> io::Result<Vec<Ent>> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    let mut raw = rustix::fs::RawDir::new(dir, buf.spare_capacity_mut());
    while let Some(e) = raw.next() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        let kind = match e.file_type() {
            rustix::fs::FileType::Directory => Kind::Dir,
            rustix::fs::FileType::Unknown => Kind::Unknown,
            _ => Kind::Other,
        };
        out.push(Ent {
            name: e.file_name().to_owned(),
            ino: e.ino(),
            kind,
        });
    }
    out.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// Whether directory listings on this file system give the inode number
/// `stat` gives (and the entry's type), so that hard links can be counted
/// and recognised from listings alone: ext2/3/4, XFS, btrfs, tmpfs.
pub fn listing_has_inodes(f: &File) -> bool {
    const KNOWN: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994];
    #[allow(clippy::useless_conversion)] // f_type is narrower on some targets
    rustix::fs::fstatfs(f).is_ok_and(|s| KNOWN.contains(&i64::from(s.f_type)))
}
