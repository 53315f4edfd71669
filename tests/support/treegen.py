"""A server's data with every kind of file a backup must keep, and a way to
compare two trees by content and metadata.

`describe(tree, fake_super=True)` reads ownership, modes and devices of
files stored by a non-root rsync (`--fake-super`) from their
`user.rsync.%stat` xattr, the way rsync itself would restore them (a
symlink is then a plain file holding its target).
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess

FIXED_MTIME = 1577934245  # 2020-01-02T03:04:05Z
STAT_XATTR = b"user.rsync.%stat"


def _write(path: bytes, data: bytes, mode=0o644, uid=0, gid=0):
    with open(path, "wb") as handle:
        handle.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def make_server_tree(root: str | bytes, seed: int = 0, big: int = 3 << 20) -> bytes:
    """Create the tree under ``root``; returns root as bytes."""
    root = os.fsencode(root)
    rng = random.Random(seed)
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    for d in (b"etc", b"bin", b"dev", b"run", b"data", b"links", b"names", b"shared"):
        os.makedirs(j(d), exist_ok=True)
    os.makedirs(j(b"shared", b"sticky"), exist_ok=True)
    os.chmod(j(b"shared", b"sticky"), 0o1777)
    _write(j(b"etc", b"config.ini"), f"[main]\nseed = {seed}\n".encode())
    _write(j(b"etc", b"secret"), b"s3cr3t\n", 0o600, 1234, 5678)
    _write(j(b"bin", b"suid"), b"#!/bin/sh\necho suid\n", 0o4755)
    _write(j(b"bin", b"sgid"), b"#!/bin/sh\necho sgid\n", 0o2755, 0, 50)
    os.mknod(j(b"dev", b"mem"), 0o640 | stat.S_IFCHR, os.makedev(1, 1))
    os.mknod(j(b"dev", b"loop9"), 0o660 | stat.S_IFBLK, os.makedev(7, 9))
    os.mkfifo(j(b"run", b"fifo"), 0o620)
    _write(j(b"data", b"big.bin"), rng.randbytes(big))
    _write(j(b"data", b"empty"), b"")
    _write(j(b"data", b"hard1"), b"hardlinked content " * 100, 0o640, 1000, 1000)
    os.link(j(b"data", b"hard1"), j(b"data", b"hard2"))
    os.link(j(b"data", b"hard1"), j(b"etc", b"hard3"))
    os.symlink(b"/etc/passwd", j(b"links", b"abs"))
    os.symlink(b"../data/big.bin", j(b"links", b"rel"))
    os.symlink(b"nowhere/at/all", j(b"links", b"dangling"))
    _write(j(b"names", b"caf\xe9.txt"), b"latin-1 name\n")
    _write(j(b"names", "ünïcödé.txt".encode()), b"utf-8 name\n")
    _write(j(b"names", b"with space"), b"space\n")
    _write(j(b"names", b"new\nline"), b"newline in name\n")
    os.setxattr(j(b"data", b"big.bin"), b"user.origin", f"seed-{seed}".encode())
    os.setxattr(j(b"names", b"caf\xe9.txt"), b"user.note", b"\x00\xffbinary")
    subprocess.run(["setfacl", "-m", "u:1234:r", os.fsdecode(j(b"etc", b"config.ini"))], check=True)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    return root


def _fake_stat(path: bytes):
    """(mode, rdev, uid, gid) from rsync's --fake-super xattr, or None."""
    try:
        raw = os.getxattr(path, STAT_XATTR, follow_symlinks=False).decode()
    except OSError:
        return None
    mode_s, dev_s, owner = raw.split(" ")
    major, minor = (int(x) for x in dev_s.split(","))
    uid, gid = (int(x) for x in owner.split(":"))
    return int(mode_s, 8), os.makedev(major, minor), uid, gid


def describe(root: str | bytes, fake_super: bool = False, skip=()) -> dict:
    """{relative path (bytes): metadata} for every entry under ``root``.

    Hardlinks are described by a group number (the sorted first path of each
    inode), so two trees compare equal when the same paths share inodes.
    """
    root = os.fsencode(root)
    skip = {os.fsencode(s) for s in skip}
    out, inode_first = {}, {}
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            entries.append(os.path.join(dirpath, name))
    for path in sorted(entries):
        rel = os.path.relpath(path, root)
        if rel in skip or any(rel.startswith(s + b"/") for s in skip):
            continue
        st = os.lstat(path)
        mode, rdev, uid, gid = st.st_mode, st.st_rdev, st.st_uid, st.st_gid
        if fake_super and (faked := _fake_stat(path)) is not None:
            mode, rdev, uid, gid = faked
        kind = stat.S_IFMT(mode)
        entry = {
            "type": {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                     stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
                     stat.S_IFSOCK: "socket"}[kind],
            "mode": oct(stat.S_IMODE(mode)),
            "owner": (uid, gid),
        }
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            entry["rdev"] = (os.major(rdev), os.minor(rdev))
        if kind == stat.S_IFLNK:
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            else:  # --fake-super keeps a symlink as a file holding its target
                with open(path, "rb") as handle:
                    entry["target"] = handle.read()
        else:
            entry["mtime"] = int(st.st_mtime)
            names = sorted(os.listxattr(path, follow_symlinks=False))
            entry["xattrs"] = {
                n: os.getxattr(path, n, follow_symlinks=False)
                for n in names
                if n.startswith("user.") and not n.startswith("user.rsync.")
            }
            entry["acl"] = any(n in ("system.posix_acl_access", "user.rsync.%aacl") for n in names)
        if stat.S_ISREG(st.st_mode) and kind == stat.S_IFREG:
            with open(path, "rb") as handle:
                entry["sha256"] = hashlib.sha256(handle.read()).hexdigest()
            entry["link"] = inode_first.setdefault((st.st_dev, st.st_ino), rel)
        out[rel] = entry
    return out
