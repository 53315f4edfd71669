#!/usr/bin/env python3
"""Generate an rsnapshot-like history for the benchmarks.

    gen_history.py ROOT [--size small|default|large] [--seed N]

ROOT/<level>.<n>/<server>/...: the newest snapshot is ``daily.0``; each
snapshot records its (simulated) time in ``.snapshot.json``. Each
server's live tree is written with real owners, modes, devices, fifos,
symlinks, hardlinks, an ACL, xattrs and a non-UTF-8 name, then stored the
way snap's history stores it: ``rsync -aHAXS --numeric-ids --fake-super``
as root into the snapshot (ownership, special files and ACLs survive only as
``user.rsync.*`` xattrs). Each newer snapshot is made as rsnapshot makes it
(``cp -al`` of the previous one, then rsync of the changed live tree): files
that did not change stay hardlinks to the older snapshots; ~2% of files get
new content (new inodes), a few are added, deleted or change owner/mode, and
the database server's dump is rewritten every time (as a nightly dump is).

Content is mixed: mostly small text-like files (config, code, logs:
compressible), a fifth random bytes (already-compressed data), a few large
files. Deterministic for a given size and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time

# files: per snapshot over all servers; dump: the db server's nightly dump.
SIZES = {
    "small": dict(snapshots=6, files=6_000, dump=2 << 20, big_max=2 << 20),
    "default": dict(snapshots=10, files=12_000, dump=4 << 20, big_max=4 << 20),
    "large": dict(snapshots=24, files=40_000, dump=12 << 20, big_max=8 << 20),
}
SERVERS = ("web1", "db1", "mail1")
LEVEL = "daily"
BASE_MTIME = 1_700_000_000
OWNERS = [(0, 0)] * 6 + [(33, 33), (1000, 1000), (105, 112), (0, 4)]
MODES = [0o644] * 8 + [0o600, 0o640, 0o755, 0o664]
TOPS = ("etc", "usr/share/doc", "var/lib/app", "var/log", "srv/www", "home/user")
RSYNC = ["rsync", "-aHAXS", "--numeric-ids", "--fake-super", "--delete"]


class Content:
    """Cheap deterministic content: slices of a word soup (compresses ~3x, like
    text) or random bytes (incompressible, like .gz and media)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
                 for _ in range(5000)]  # fmt: skip
        self.text = " ".join(rng.choice(words) for _ in range(400_000)).encode()  # ~2.6 MB

    def make(self, size: int, binary: bool) -> bytes:
        if binary:
            return self.rng.randbytes(size)
        out = bytearray()
        while len(out) < size:
            off = self.rng.randrange(0, len(self.text) - 65536)
            out += b"%d " % self.rng.getrandbits(64) + self.text[off : off + self.rng.randint(1024, 65536)]
        return bytes(out[:size])

    def size(self, big_max: int) -> int:
        r = self.rng.random()
        if r < 0.01:
            return 0
        if r < 0.012:
            return self.rng.randint(256 << 10, big_max)
        if r < 0.032:
            return self.rng.randint(8 << 10, 256 << 10)
        return self.rng.randint(256, 8 << 10)


class LiveServer:
    """One server's live tree in a staging directory, changed between snapshots."""

    def __init__(self, root: str, name: str, nfiles: int, cfg: dict, rng: random.Random, content: Content):
        self.root, self.name, self.cfg, self.rng, self.c = root, name, cfg, rng, content
        self.files: list[str] = []
        self.serial = 0
        self.clock = BASE_MTIME
        for _ in range(nfiles):
            self.add_file()
        self.specials()
        if name.startswith("db"):
            self.dump()

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def write(self, rel: str, data: bytes, mode=None, owner=None):
        full = self.path(rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = full + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        uid, gid = owner or self.rng.choice(OWNERS)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode if mode is not None else self.rng.choice(MODES))
        t = self.clock - self.rng.randint(0, 86400 * 30)
        os.utime(tmp, (t, t))
        os.replace(tmp, full)

    def add_file(self):
        i = self.serial
        self.serial += 1
        top = TOPS[(i // 400) % len(TOPS)]
        binary = self.rng.random() < 0.2
        ext = ".gz" if binary else self.rng.choice([".conf", ".txt", ".py", ".log", ".html"])
        rel = f"{top}/d{(i // 20) % 1000:03d}/f{i:06d}{ext}"
        self.write(rel, self.c.make(self.c.size(self.cfg["big_max"]), binary))
        self.files.append(rel)

    def specials(self):
        j = self.path
        for d in ("dev", "run", "links", "names", "bin"):
            os.makedirs(j(d), exist_ok=True)
        os.mknod(j("dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(j("dev/loop0"), 0o660 | stat.S_IFBLK, os.makedev(7, 0))
        os.mkfifo(j("run/initctl"), 0o600)
        self.write("bin/sudo", b"#!/bin/sh\n" * 100, mode=0o4755)
        self.write("bin/wall", b"#!/bin/sh\n" * 50, mode=0o2755, owner=(0, 5))
        os.symlink("/etc/hostname", j("links/abs"))
        os.symlink(f"../{self.files[0]}", j("links/rel"))
        os.symlink("nowhere/at/all", j("links/dangling"))
        self.write("names/caf\udce9.txt", b"latin-1 name\n")  # undecodable byte 0xe9
        self.write("names/ünïcödé.txt", b"utf-8 name\n")
        self.write("names/with space", b"space\n")
        os.link(j(self.files[1]), j("names/hardlink-in-tree"))
        os.setxattr(j(self.files[2]), "user.origin", f"{self.name}".encode())
        subprocess.run(["setfacl", "-m", "u:1000:r", j(self.files[3])], check=True)
        for d in ("dev", "run", "links", "names", "bin"):
            os.utime(j(d), (BASE_MTIME, BASE_MTIME))

    def dump(self):
        self.write("var/backups/db.sql", self.c.make(self.cfg["dump"], False), mode=0o600, owner=(105, 112))

    def advance(self):
        """One interval of change: ~2% new content, 0.5% new files, 0.3% deleted,
        0.2% owner/mode changes, a new dump."""
        self.clock += 86400
        n = len(self.files)
        for rel in self.rng.sample(self.files, max(1, n // 50)):
            self.write(rel, self.c.make(self.c.size(self.cfg["big_max"]), rel.endswith(".gz")))
        for _ in range(max(1, n // 200)):
            self.add_file()
        for rel in self.rng.sample(self.files[4:], max(1, n // 300)):
            os.unlink(self.path(rel))
            self.files.remove(rel)
        for rel in self.rng.sample(self.files[4:], max(1, n // 500)):
            uid, gid = self.rng.choice(OWNERS)
            os.chown(self.path(rel), uid, gid)
            os.chmod(self.path(rel), self.rng.choice(MODES))
        if self.name.startswith("db"):
            self.dump()


def tree_stats(root: str) -> dict:
    entries = inodes = 0
    apparent = unique = 0
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            entries += 1
            if stat.S_ISREG(st.st_mode):
                apparent += st.st_size
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                inodes += 1
                if stat.S_ISREG(st.st_mode):
                    unique += st.st_size
    return {"entries": entries, "inodes": inodes, "apparent_bytes": apparent, "unique_bytes": unique}


def stamp(path: str, t: int):
    """The snapshot's time, as snap's rotation records it (``.snapshot.json``)."""
    with open(os.path.join(path, ".snapshot.json"), "w") as handle:
        json.dump({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))}, handle)


class History:
    """A generated history that can be rotated further, as rsnapshot rotates
    it: ``levels`` lowest first, e.g. ``[("daily", 7), ("weekly", 4),
    ("monthly", 6)]``; a higher level takes the oldest snapshot of the level
    below every ``7`` (weekly) or ``4`` (monthly, in weeks) rotations of it.
    Like rsnapshot's ``sync_first``, servers are synced into a ``.sync``
    directory (kept beside the history) that each rotation hard-links in."""

    EVERY = {"weekly": 7, "monthly": 4}

    def __init__(self, root: str, size: str = "default", seed: int = 1, servers=SERVERS, levels=None, log=None):
        self.root, self.size, self.seed, self.log = root, size, seed, log
        self.cfg = SIZES[size]
        self.levels = levels or [(LEVEL, self.cfg["snapshots"])]
        os.makedirs(root)
        os.chmod(root, 0o700)
        parent = os.path.dirname(os.path.abspath(root))
        self.sync = os.path.join(parent, os.path.basename(root) + ".sync")
        self.rng = random.Random(seed)
        content = Content(self.rng)
        self.staging = tempfile.mkdtemp(prefix="snap-bench-live-", dir=parent)
        self.live = [LiveServer(os.path.join(self.staging, s), s, self.cfg["files"] // len(servers), self.cfg,
                                self.rng, content) for s in servers]  # fmt: skip
        self.rotations = 0

    def _mv(self, a: str, b: str):
        os.rename(os.path.join(self.root, a), os.path.join(self.root, b))

    def _drop(self, name: str):
        path = os.path.join(self.root, name)
        if os.path.exists(path):
            shutil.rmtree(path)

    def _higher(self, i: int):
        """rsnapshot <level i>: rotate it, take the lower level's oldest."""
        name, keep = self.levels[i]
        lower, lkeep = self.levels[i - 1]
        if not os.path.exists(os.path.join(self.root, f"{lower}.{lkeep - 1}")):
            return
        self._drop(f"{name}.{keep - 1}")
        for n in range(keep - 2, -1, -1):
            if os.path.exists(os.path.join(self.root, f"{name}.{n}")):
                self._mv(f"{name}.{n}", f"{name}.{n + 1}")
        self._mv(f"{lower}.{lkeep - 1}", f"{name}.0")

    def rotate(self):
        """One interval: the servers change, are synced, and history rotates."""
        if self.rotations > 0:
            for server in self.live:
                server.advance()
        os.makedirs(self.sync, exist_ok=True)
        for server in self.live:
            subprocess.run([*RSYNC, server.root + "/", os.path.join(self.sync, server.name) + "/"], check=True)
        self.rotations += 1
        # Higher levels first (as cron runs them), each every EVERY rotations of the one below.
        period = 1
        due = []
        for i, (name, _) in enumerate(self.levels[1:], start=1):
            period *= self.EVERY.get(name, 7)
            if self.rotations % period == 0:
                due.append(i)
        for i in sorted(due, reverse=True):
            self._higher(i)
        name, keep = self.levels[0]
        self._drop(f"{name}.{keep - 1}")
        for n in range(keep - 2, -1, -1):
            if os.path.exists(os.path.join(self.root, f"{name}.{n}")):
                self._mv(f"{name}.{n}", f"{name}.{n + 1}")
        target = os.path.join(self.root, f"{name}.0")
        subprocess.run(["cp", "-al", self.sync, target], check=True)
        stamp(target, self.live[0].clock)

    def close(self):
        shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.sync, ignore_errors=True)


def generate(root: str, size: str = "default", seed: int = 1, servers=SERVERS, log=None, keep=False):
    """Create the history under ``root`` (must not exist); returns its
    description, and with ``keep`` the :class:`History` to rotate further
    (close it when done)."""
    started = time.monotonic()
    h = History(root, size, seed, servers, log=log)
    n = h.cfg["snapshots"]
    try:
        for k in range(n):
            h.rotate()
            if log:
                log(f"  snapshot {k + 1}/{n}")
    finally:
        if not keep:
            h.close()
    info = {"size": size, "seed": seed, "servers": list(servers), "snapshots": n,
            "files_per_snapshot": h.cfg["files"], **tree_stats(root),
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    with open(os.path.join(os.path.dirname(os.path.abspath(root)), os.path.basename(root) + ".json"), "w") as h2:
        json.dump(info, h2)
    return (info, h) if keep else info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--size", choices=sorted(SIZES), default="default")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("gen_history.py runs as root (owners, device nodes, rsync --fake-super as rsnapshot runs it)")
    info = generate(args.root, args.size, args.seed, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
