#![forbid(unsafe_code)]
//! rsync `--fake-super` metadata.
//!
//! An rsync receiver without root privileges (`--fake-super`) stores what it
//! could not apply in the xattr `user.rsync.%stat`, written by rsync's
//! `set_stat_xattr()` as `"%o %u,%u %u:%u"`: the full mode in octal (file
//! type bits included), the device's major,minor (0,0 for non-devices) and
//! uid:gid. Devices, fifos and sockets are then stored as empty regular
//! files. ACLs go to `user.rsync.%aacl` / `%dacl` in rsync's own encoding;
//! those are kept as xattrs, not turned into POSIX ACLs.

use crate::unpack::EntryKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeStat {
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FakeStat {
    /// Parse a `user.rsync.%stat` value; `None` if malformed.
    pub fn parse(value: &[u8]) -> Option<FakeStat> {
        let s = std::str::from_utf8(value).ok()?;
        let s = s.trim_end_matches('\0');
        let mut parts = s.split(' ');
        let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
        let (major, minor) = parts.next()?.split_once(',')?;
        let (uid, gid) = parts.next()?.split_once(':')?;
        if parts.next().is_some() {
            return None;
        }
        Some(FakeStat {
            mode,
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
        })
    }

    /// The file type recorded, if it is one rsync stores as a plain file
    /// (devices, fifos, sockets, symlinks).
    pub fn special_kind(&self) -> Option<EntryKind> {
        match self.mode & libc::S_IFMT {
            libc::S_IFCHR => Some(EntryKind::CharDevice),
            libc::S_IFBLK => Some(EntryKind::BlockDevice),
            libc::S_IFIFO => Some(EntryKind::Fifo),
            libc::S_IFSOCK => Some(EntryKind::Socket),
            // A symlink cannot carry user.* xattrs: rsync keeps it as a
            // plain file whose content is the link target.
            libc::S_IFLNK => Some(EntryKind::Symlink),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rsync_format() {
        let f = FakeStat::parse(b"60620 8,1 0:6").unwrap();
        assert_eq!(f.mode, 0o60620);
        assert_eq!((f.major, f.minor, f.uid, f.gid), (8, 1, 0, 6));
        assert_eq!(f.special_kind(), Some(EntryKind::BlockDevice));
        let f = FakeStat::parse(b"104755 0,0 0:0").unwrap();
        assert_eq!(f.mode & 0o7777, 0o4755);
        assert_eq!(f.special_kind(), None);
        let f = FakeStat::parse(b"120777 0,0 1000:1000").unwrap();
        assert_eq!(f.special_kind(), Some(EntryKind::Symlink));
        assert_eq!(FakeStat::parse(b"100644 0,0 1000"), None);
        assert_eq!(FakeStat::parse(b"zz 0,0 0:0"), None);
        assert_eq!(FakeStat::parse(b"100644 0,0 0:0 extra"), None);
    }
}
