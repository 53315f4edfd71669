"""Per-account quotas on the backup server's jails: what the kernel enforces.

One compromised server must not fill the backup disk for everyone. Each push
account gets a limit the kernel enforces on the jails' filesystem, by one of:

* ``usrquota``: Linux user quotas (ext4 or XFS mounted with ``usrquota`` /
  ``uquota``, quotas on; Debian's ``quota`` package): a block and an inode
  limit per account (``setquota``).
* ``btrfs``: each jail's ``incoming`` is a btrfs subvolume with a qgroup
  limit (``btrfs qgroup limit``). btrfs has no inode limit: a file's metadata
  counts against the byte limit, so millions of empty files hit it too.

``auto`` picks by the filesystem the jails live on. Everything goes through
the real tools (``findmnt``, ``quotaon``, ``repquota``, ``setquota``,
``btrfs``); errors name the filesystem and what to fix.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass

from snap_core.errors import InvalidInput, IOFailure

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(i?B)?\s*$", re.IGNORECASE)


def parse_size(value, what: str) -> int | None:
    """``500G`` / ``2T`` / ``1048576`` (bytes) -> bytes; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: {value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(f"{what}: {value} is negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise InvalidInput(f"{what}: {value!r} is not a size (use bytes or 500G, 2T, ...)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def parse_count(value, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what}: {value!r} is not a count of inodes")
    return value


@dataclass
class Filesystem:
    target: str  # mount point
    fstype: str


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise IOFailure(f"{what}: {argv[0]} is not installed") from None
    if proc.returncode != 0:
        raise IOFailure(f"{what}: {' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def filesystem_of(path: str) -> Filesystem:
    out = _run(["findmnt", "-n", "-o", "TARGET,FSTYPE", "--target", path], f"finding the filesystem of {path}")
    target, fstype = out.split()[:2]
    return Filesystem(target=target, fstype=fstype)


def method_for(fs: Filesystem, wanted: str = "auto") -> str:
    if wanted not in ("auto", "usrquota", "btrfs"):
        raise InvalidInput(f"snap:server:quota:method {wanted!r} must be auto, usrquota or btrfs")
    if wanted != "auto":
        return wanted
    return "btrfs" if fs.fstype == "btrfs" else "usrquota"


def wanted_limits(quota: dict | None, override: dict | None, minion_id: str) -> tuple[int | None, int | None]:
    """(bytes, inodes) for ``minion_id`` from pillar snap:server:quota and its override."""
    merged = dict(quota or {})
    merged.update(override or {})
    unknown = set(merged) - {"blocks", "inodes", "method"}
    if unknown:
        raise InvalidInput(f"snap:server:quota for {minion_id}: unknown keys {sorted(unknown)}")
    return (
        parse_size(merged.get("blocks"), f"snap:server:quota:blocks for {minion_id}"),
        parse_count(merged.get("inodes"), f"snap:server:quota:inodes for {minion_id}"),
    )


# -- what snap set ---------------------------------------------------------------
# A limit snap applied is recorded in the jail's root-owned home, so that when
# the pillar goes back to "leave quotas alone" (an override removed, the
# default null) snap lifts the limit it set instead of leaving a stale one
# that would fail every push. A limit set by hand (no record) stays.

RECORD = "quota.json"


def recorded(home: str) -> bool:
    """Whether snap set a quota on the jail at ``home`` (root's record, never followed)."""
    try:
        fd = os.open(os.path.join(home, RECORD), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP):  # none, or a link: not snap's
            return False
        raise
    try:
        st = os.fstat(fd)
        return stat.S_ISREG(st.st_mode) and st.st_uid == 0
    finally:
        os.close(fd)


def remember(home: str, limit_bytes: int | None, limit_inodes: int | None, dry_run: bool) -> None:
    if dry_run or not os.path.isdir(home):
        return
    path = os.path.join(home, RECORD)
    tmp = path + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"bytes": limit_bytes, "inodes": limit_inodes}, out)
    os.replace(tmp, path)


def forget(home: str, dry_run: bool) -> None:
    if not dry_run:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(home, RECORD))


# -- user quotas (ext4, XFS) --------------------------------------------------


def usrquota_table(fs: Filesystem) -> dict[int, tuple[int, int]]:
    """{uid: (block hard limit in bytes, inode hard limit)} of every user on ``fs``."""
    what = f"user quotas on {fs.target}"
    state = _run(["quotaon", "-p", "-u", fs.target], what)
    if " is on" not in state:
        raise InvalidInput(
            f"snap:server:quota is set but {fs.target} ({fs.fstype}) has no user quotas on: mount it with "
            f"usrquota (XFS: uquota) and run quotaon, or put the jails on btrfs (snap:server:jails_dir)"
        )
    text = _run(["repquota", "-u", "-n", "-O", "csv", fs.target], what)
    table = {}
    for row in csv.DictReader(io.StringIO(text)):
        user = (row.get("User") or "").lstrip("#")
        if user.isdigit():
            table[int(user)] = (int(row.get("BlockHardLimit") or 0) * 1024, int(row.get("FileHardLimit") or 0))
    return table


def ensure_usrquota(fs: Filesystem, account: str, uid: int, limit: tuple[int, int], table, dry_run: bool):
    current = table.get(uid, (0, 0))
    if current == limit:
        return {}
    if not dry_run:
        kib = -(-limit[0] // 1024)
        _run(["setquota", "-u", account, "0", str(kib), "0", str(limit[1]), fs.target], f"quota of {account}")
    return {"quota": {"old": {"bytes": current[0], "inodes": current[1]},
                      "new": {"bytes": limit[0], "inodes": limit[1]}}}  # fmt: skip


# -- btrfs subvolumes and qgroups -----------------------------------------------


def is_subvolume(path: str) -> bool:
    return os.path.isdir(path) and os.stat(path).st_ino == 256


def btrfs_limit(path: str) -> int:
    """The qgroup's referenced-bytes limit of subvolume ``path`` (0: none, or quotas off)."""
    proc = subprocess.run(["btrfs", "qgroup", "show", "-rf", "--raw", path], capture_output=True, text=True)
    if proc.returncode != 0 and "quotas not enabled" in proc.stderr:
        return 0
    out = _run(["btrfs", "qgroup", "show", "-rf", "--raw", path], f"quota of {path}")
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("0/"):
            return 0 if parts[3] in ("none", "0") else int(parts[3])
    return 0


def ensure_btrfs(incoming: str, account: str, limit_bytes: int, dry_run: bool):
    """The jail's incoming must be a subvolume (made by :func:`make_subvolume`) with this limit."""
    if not is_subvolume(incoming):
        raise IOFailure(f"{incoming} is not a btrfs subvolume: the jail of {account} cannot have a quota")
    current = btrfs_limit(incoming)
    if current == limit_bytes:
        return {}
    if not dry_run:
        _run(["btrfs", "quota", "enable", os.path.dirname(incoming)], f"quotas on {incoming}")
        _run(["btrfs", "qgroup", "limit", str(limit_bytes or "none"), incoming], f"quota of {account}")
    return {"quota": {"old": {"bytes": current}, "new": {"bytes": limit_bytes}}}


def make_subvolume(incoming: str, dry_run: bool) -> list[str]:
    """Make the jail's ``incoming`` a btrfs subvolume. A plain directory from
    before is removed (btrfs cannot move files into a subvolume by rename; the
    server's data is in history, and its next push sends everything once)."""
    if is_subvolume(incoming):
        return []
    changes = []
    if os.path.lexists(incoming):
        changes.append(f"{incoming}: replaced by a btrfs subvolume (the next push sends everything once)")
        if not dry_run:
            old = incoming + ".old"
            os.rename(incoming, old)
            _run(["rm", "-rf", "--one-file-system", "--", old], f"removing {old}")
    else:
        changes.append(f"{incoming}: created as a btrfs subvolume")
    if not dry_run:
        _run(["btrfs", "subvolume", "create", incoming], f"creating {incoming}")
    return changes
