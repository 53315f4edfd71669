//! Test helpers: a source tree with every kind of entry, a snapshot of a
//! tree's metadata for comparisons, mounts that clean up after themselves.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Tests that need root (devices, chown, mount) skip loudly without it.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!(
                "\n!!!!! SKIPPED {}: needs root (CI runs as root) !!!!!\n",
                module_path!()
            );
            return;
        }
    };
}

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

pub fn write(root: &Path, rel: &[u8], data: &[u8]) {
    let path = p(root, rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
}

pub fn mkdir(root: &Path, rel: &[u8]) {
    fs::create_dir_all(p(root, rel)).unwrap();
}

pub fn link(root: &Path, from: &[u8], to: &[u8]) {
    let to = p(root, to);
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::hard_link(p(root, from), to).unwrap();
}

pub fn symlink(root: &Path, target: &[u8], at: &[u8]) {
    std::os::unix::fs::symlink(OsStr::from_bytes(target), p(root, at)).unwrap();
}

pub fn chmod(root: &Path, rel: &[u8], mode: u32) {
    fs::set_permissions(p(root, rel), fs::Permissions::from_mode(mode)).unwrap();
}

pub fn chown(root: &Path, rel: &[u8], uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p(root, rel), Some(uid), Some(gid)).unwrap();
}

pub fn setxattr(root: &Path, rel: &[u8], name: &str, value: &[u8]) {
    xattr::set(p(root, rel), name, value).unwrap();
}

pub fn mknod(root: &Path, rel: &[u8], ft: FileType, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        p(root, rel),
        ft,
        Mode::from_raw_mode(0o640),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

pub fn socket(root: &Path, rel: &[u8]) {
    let l = std::os::unix::net::UnixListener::bind(p(root, rel)).unwrap();
    drop(l); // the socket file stays
}

/// Pseudo-random bytes (xorshift), reproducible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Set the mtime of every entry under `root` (children before parents) to
/// a distinct, known value.
pub fn set_mtimes(root: &Path) {
    fn walk(dir: &Path, n: &mut i64) {
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let m = fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                walk(&path, n);
            }
            *n += 3601;
            let t = Timespec {
                tv_sec: 1_600_000_000 + *n,
                tv_nsec: 0,
            };
            rustix::fs::utimensat(
                CWD,
                &path,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }
    let mut n = 0;
    walk(root, &mut n);
}

pub const BLOCK: usize = 128 * 1024;

/// An rsnapshot-like history with every kind of entry SquashFS must keep.
/// Also creates `outside/` next to `src/` with one more link to a file, so
/// that file's st_nlink counts a link outside the packed tree.
pub fn build_tree(base: &Path) -> PathBuf {
    let src = base.join("src");
    let s = &src;
    // daily.0/web1: everything.
    write(s, b"daily.0/web1/etc/hosts", b"127.0.0.1 localhost\n");
    write(
        s,
        b"daily.0/web1/etc/passwd",
        b"root:x:0:0::/root:/bin/sh\n",
    );
    write(s, b"daily.0/web1/empty", b"");
    write(s, b"daily.0/web1/one_block", &noise(BLOCK, 1));
    write(s, b"daily.0/web1/block_plus_one", &noise(BLOCK + 1, 2));
    let mut several = noise(3 * BLOCK + 1000, 3);
    several[BLOCK..2 * BLOCK].fill(0); // a sparse block in the middle
    write(s, b"daily.0/web1/several_blocks", &several);
    write(
        s,
        b"daily.0/web1/text",
        &b"compressible text ".repeat(10000),
    );
    write(s, b"daily.0/web1/caf\xe9", b"latin-1 name\n");
    write(s, b"daily.0/web1/new\nline", b"newline in name\n");
    write(s, b"daily.0/web1/usr/bin/sudo", b"#!/bin/sh\n");
    chmod(s, b"daily.0/web1/usr/bin/sudo", 0o4755);
    write(s, b"daily.0/web1/usr/bin/wall", b"#!/bin/sh\n");
    chmod(s, b"daily.0/web1/usr/bin/wall", 0o2755);
    chown(s, b"daily.0/web1/usr/bin/wall", 0, 5);
    mkdir(s, b"daily.0/web1/tmp");
    chmod(s, b"daily.0/web1/tmp", 0o1777);
    mkdir(s, b"daily.0/web1/srv/sgid");
    chmod(s, b"daily.0/web1/srv/sgid", 0o2770);
    chown(s, b"daily.0/web1/srv/sgid", 1234, 5678);
    write(s, b"daily.0/web1/home/u/file", b"user file\n");
    chown(s, b"daily.0/web1/home/u/file", 1000, 1000);
    chown(s, b"daily.0/web1/home/u", 1000, 1000);
    mkdir(s, b"daily.0/web1/dev");
    mknod(s, b"daily.0/web1/dev/null", FileType::CharacterDevice, 1, 3);
    mknod(s, b"daily.0/web1/dev/loop9", FileType::BlockDevice, 7, 9);
    mknod(
        s,
        b"daily.0/web1/dev/big",
        FileType::CharacterDevice,
        300,
        70000,
    );
    mknod(s, b"daily.0/web1/dev/fifo", FileType::Fifo, 0, 0);
    socket(s, b"daily.0/web1/dev/sock");
    symlink(s, b"../etc/hosts", b"daily.0/web1/dev/hosts_link");
    symlink(s, b"/no/such/target\xff", b"daily.0/web1/dev/dangling\xfe");
    // xattrs: binary values, all storable namespaces, rsync fake-super.
    setxattr(
        s,
        b"daily.0/web1/etc/passwd",
        "user.bin",
        b"\x00\x01\xff\x00",
    );
    setxattr(
        s,
        b"daily.0/web1/etc/passwd",
        "user.rsync.%stat",
        b"100600 0,0 0:0",
    );
    setxattr(s, b"daily.0/web1/etc/passwd", "trusted.snap", b"t");
    setxattr(s, b"daily.0/web1/etc/passwd", "security.snaptest", b"s");
    setxattr(s, b"daily.0/web1/etc", "user.dir", b"on a directory");
    setxattr(s, b"daily.0/web1/dev/fifo", "trusted.fifo", b"on a fifo");
    // Hard links: within a snapshot, a hardlinked symlink and fifo.
    link(s, b"daily.0/web1/etc/hosts", b"daily.0/web1/hosts.same");
    link(
        s,
        b"daily.0/web1/dev/hosts_link",
        b"daily.0/web1/dev/hosts_link2",
    );
    link(s, b"daily.0/web1/dev/fifo", b"daily.0/web1/dev/fifo2");
    // daily.0/db1, with a file hardlinked into web1 (outside a web1-only selection).
    write(s, b"daily.0/db1/data/table", &noise(50_000, 4));
    link(
        s,
        b"daily.0/db1/data/table",
        b"daily.0/web1/shared_with_db1",
    );
    write(s, b"daily.0/db1/data/own", b"db only\n");
    // daily.1: older snapshot, mostly hardlinks to daily.0.
    for f in [
        &b"etc/hosts"[..],
        b"etc/passwd",
        b"one_block",
        b"several_blocks",
        b"caf\xe9",
    ] {
        let mut a = b"daily.0/web1/".to_vec();
        a.extend_from_slice(f);
        let mut b = b"daily.1/web1/".to_vec();
        b.extend_from_slice(f);
        link(s, &a, &b);
    }
    write(s, b"daily.1/web1/text", b"older text\n");
    link(s, b"daily.0/db1/data/table", b"daily.1/db1/data/table");
    // A link outside the packed tree.
    fs::create_dir_all(base.join("outside")).unwrap();
    fs::hard_link(p(s, b"daily.0/web1/etc/hosts"), base.join("outside/extra")).unwrap();
    set_mtimes(s);
    src
}

/// What a tree holds, per relative path.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<u64>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
    /// (dev, ino) → paths, for non-directories.
    pub groups: HashMap<(u64, u64), BTreeSet<Vec<u8>>>,
    pub nlink: BTreeMap<Vec<u8>, u64>,
}

/// Read a tree. `keep(rel)` decides which paths to include (subtrees of
/// excluded directories are skipped).
pub fn read_tree(root: &Path, keep: &dyn Fn(&[u8]) -> bool) -> Tree {
    let mut t = Tree {
        nodes: BTreeMap::new(),
        groups: HashMap::new(),
        nlink: BTreeMap::new(),
    };
    fn walk(root: &Path, rel: &[u8], keep: &dyn Fn(&[u8]) -> bool, t: &mut Tree) {
        let dir = root.join(OsStr::from_bytes(rel));
        for e in fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().into_vec();
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(&name);
            if !keep(&r) {
                continue;
            }
            let path = root.join(OsStr::from_bytes(&r));
            let m = fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_char_device() {
                "chardev"
            } else if ft.is_block_device() {
                "blockdev"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            let mut xattrs = BTreeMap::new();
            for n in xattr::list(&path).unwrap() {
                if let Some(v) = xattr::get(&path, &n).unwrap() {
                    xattrs.insert(n.into_vec(), v);
                }
            }
            t.nodes.insert(
                r.clone(),
                Node {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: m.mtime(),
                    content: ft.is_file().then(|| fs::read(&path).unwrap()),
                    target: ft
                        .is_symlink()
                        .then(|| fs::read_link(&path).unwrap().into_os_string().into_vec()),
                    rdev: (ft.is_char_device() || ft.is_block_device()).then(|| m.rdev()),
                    xattrs,
                },
            );
            t.nlink.insert(r.clone(), m.nlink());
            if ft.is_dir() {
                walk(root, &r, keep, t);
            } else {
                t.groups.entry((m.dev(), m.ino())).or_default().insert(r);
            }
        }
    }
    walk(root, b"", keep, &mut t);
    t
}

pub fn all(_: &[u8]) -> bool {
    true
}

/// Compare `got` with `want`: same paths and metadata, and the same hard
/// link structure with st_nlink equal to the number of links in the tree.
/// `check_dir_nlink`: directories have 2 + subdirectories links (true for a
/// mounted image; an extracted tree's file system decides for itself).
pub fn assert_same(want: &Tree, got: &Tree, check_dir_nlink: bool) {
    let wk: Vec<_> = want
        .nodes
        .keys()
        .map(|k| String::from_utf8_lossy(k))
        .collect();
    let gk: Vec<_> = got
        .nodes
        .keys()
        .map(|k| String::from_utf8_lossy(k))
        .collect();
    assert_eq!(wk, gk, "paths differ");
    for (k, w) in &want.nodes {
        let g = &got.nodes[k];
        assert_eq!(w, g, "entry {} differs", String::from_utf8_lossy(k));
    }
    let canon = |t: &Tree| -> BTreeSet<Vec<Vec<u8>>> {
        t.groups
            .values()
            .map(|s| s.iter().cloned().collect())
            .collect()
    };
    assert_eq!(canon(want), canon(got), "hard link structure differs");
    for paths in got.groups.values() {
        for p in paths {
            assert_eq!(
                got.nlink[p],
                paths.len() as u64,
                "st_nlink of {}",
                String::from_utf8_lossy(p)
            );
        }
    }
    if check_dir_nlink {
        for (k, n) in &got.nodes {
            if n.kind == "dir" {
                let subdirs = got
                    .nodes
                    .iter()
                    .filter(|(c, cn)| {
                        cn.kind == "dir"
                            && c.len() > k.len() + 1
                            && c.starts_with(k)
                            && c[k.len()] == b'/'
                            && !c[k.len() + 1..].contains(&b'/')
                    })
                    .count() as u64;
                assert_eq!(
                    got.nlink[k],
                    2 + subdirs,
                    "nlink of dir {}",
                    String::from_utf8_lossy(k)
                );
            }
        }
    }
}

/// A loop mount that is unmounted when dropped.
pub struct Mount(pub PathBuf);

impl Mount {
    pub fn new(args: &[&str], dir: &Path) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(args).arg(dir).status().unwrap();
        assert!(st.success(), "mount {args:?} failed");
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
