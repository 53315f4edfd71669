#!/usr/bin/env python3
"""Chains against the reference tools, side by side in one run.

    bench/chain.py                       # default tree: next link after one rotation
    bench/chain.py --year                # also a simulated year of 26 links
    bench/chain.py --size small --repeat 1

On a generated history (bench/gen_history.py, tmpfs by default), each
command in a process of its own (bench/measure.py: wall, CPU, peak RSS):

- next link after one rotation: snap's link (the Rust engine, through
  ``examples/snap_pack_cli link``; and the ``snap_core.chain_link`` binding
  in a Python process) against snap's own full pack of the same history
  (``snap-backup pack``), ``mksquashfs`` appending the new snapshot to an
  image of the history before the rotation, and restic (local repository)
  backing up the history before and after the same rotation;
- a simulated year (``--year``): 26 links, 14 daily rotations between them,
  snapshots aging out through daily/weekly/monthly levels as rsnapshot ages
  them; bytes written per link against a full archive every time, dead
  bytes, and the link's peak RSS at the start and at the end of the chain.

Rounds of the link commands start from the same saved chain state (index
copied back). Prints Markdown; ``--output FILE`` writes it too.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from gen_history import History, tree_stats  # noqa: E402
from measure import measure  # noqa: E402

PY = sys.executable
SNAP = [PY, "-m", "snap_core"]
CLI = REPO / "target" / "release" / "examples" / "snap_pack_cli"
CRYPT = REPO / "target" / "release" / "examples" / "crypt"
RESTORE = REPO / "target" / "release" / "examples" / "chain_restore"
MIB = 1 << 20
TARGETS = {
    "bytes": 0.05,  # link bytes / full image, at most
    "vs_pack": 0.1,  # link wall / snap full pack wall, at most
    "vs_append": 0.3,  # link wall / mksquashfs append wall, at most
    "rss": 32 * MIB,  # link peak RSS, at most
    "vs_restic_time": 0.2,  # link wall / restic second run, at most
    "vs_restic_bytes": 1.5,  # link bytes / restic added bytes, at most
    "year": 0.2,  # bytes written by the chain / a full archive every time
}
SERIAL = "snap: the same, one piece at a time (restore before 2026-12-02)"
FILES_SNAP = "snap: the same, then the image unpacked (owners applied), as snap-backup restore does"
FILES_GPG = "gpg -d of the equivalent full image, then unsquashfs of it"
FILES_FULL = "gpg -d of a full archive of the same point (no dead data), then unsquashfs of it"
FILES_NEED = ("snap: only the pieces the files need, decrypted into the image, then unpacked (owners applied), "
              "as snap-backup restore does since 2026-12-02")  # fmt: skip
SERVER_SNAP = "one server of the newest snapshot: snap, only the pieces it needs, then unpacked"
SERVER_FULL = "one server of the newest snapshot: gpg -d of the full archive, then unsquashfs of that server"
YEAR_LEVELS = [("daily", 7), ("weekly", 4), ("monthly", 6)]


def decrypted(stderr: str) -> str:
    """What chain_restore said it decrypted."""
    return next((line for line in stderr.splitlines() if "tails decrypted" in line), stderr)


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def med(samples, attr="wall"):
    return statistics.median(getattr(s, attr) for s in samples)


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def inventory(root) -> dict:
    """Every regular file's content in a history, once: (inode, mtime, size) -> size. rsnapshot
    hardlinks unchanged files across snapshots and the generator rewrites a changed file whole,
    so a key is one content, present in the history as long as any snapshot holds it."""
    got, stack = {}, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    got[(st.st_ino, st.st_mtime_ns, st.st_size)] = st.st_size
    return got


def lock_bound(points, every, retain):
    """The least GiB-months a whole-file design can hold, as a share of a full archive every time.

    ``points``: the inventory of the history at each archive, ``every`` days apart. A restore
    point must stay readable for ``retain`` days after its upload, so a file's content must be
    held from the first archive that has it to ``retain`` days after the last (``retain >=
    every``: the holds of consecutive archives overlap): a design that stores each file's
    content once, whole, and locks it exactly that long. A full archive every time holds each
    point's contents ``retain`` days. Uncompressed sizes on both sides, metadata left out.

    Not a floor for every design (the cold attack of 2026-12-01): deduplication below the file
    (chunks, deltas, a dictionary) can hold less, the generator's text being slices of one
    word soup; contents that compress better than the average can be held longer for less;
    identical contents in different inodes count once each here. It is the floor for snap's
    kind of design, which stores whole files."""
    if retain < every:
        raise ValueError(f"retain ({retain} d) < every ({every} d): the holds of archives would not overlap")
    first, last, size = {}, {}, {}
    full = 0
    for i, inv in enumerate(points):
        for k, n in inv.items():
            first.setdefault(k, i)
            last[k] = i
            size[k] = n
        full += sum(inv.values()) * retain
    least = sum(n * ((last[k] - first[k]) * every + retain) for k, n in size.items())
    return least / full if full else 0.0


def table(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


class ChainBench:
    def __init__(self, args):
        self.args = args
        base = args.workdir or ("/dev/shm" if shutil.disk_usage("/dev/shm").free > 8 << 30 else tempfile.gettempdir())
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="snap-chain-bench-", dir=base))
        self.work.chmod(0o700)
        self.level = str(args.level)
        self.restic_env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(self.work / "rcache")}
        self.lines: list[str] = []
        self.targets: list[list[str]] = []

    def quiet(self):
        if self.args.max_load is None:
            return
        deadline = time.monotonic() + self.args.wait
        while os.getloadavg()[0] > self.args.max_load and time.monotonic() < deadline:
            time.sleep(5)

    def rounds(self, variants, repeat):
        """variants: (name, fn returning a Sample); alternate who goes first."""
        got = {name: [] for name, _ in variants}
        for i in range(repeat):
            self.quiet()
            for name, fn in variants if i % 2 == 0 else variants[::-1]:
                got[name].append(fn())
        return got

    # -- commands -----------------------------------------------------------------------------
    def link_cmd(self, history, index, tail, sb, start=False):
        return [str(CLI), "link", str(history), str(index), str(tail), str(sb), "start" if start else "no",
                self.level]  # fmt: skip

    def run_link(self, history, state_from, n, start=False):
        """A link from a saved chain state (its index), in a fresh directory."""
        d = self.work / f"link-{n}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        if state_from is not None:
            shutil.copy(state_from, d / "index")
        tail = d / "tail"
        s = measure(self.link_cmd(history, d / "index", tail, d / "sb", start), stdout=d / "out.json")
        s.extra = json.loads((d / "out.json").read_text())
        return s, d

    def restic(self, *args, json_out=False):
        cmd = ["restic", "-r", str(self.work / "restic"), "--quiet", *args] + (["--json"] if json_out else [])
        return subprocess.run(cmd, env=self.restic_env, check=True, capture_output=True, text=True).stdout

    # -- next link after one rotation ---------------------------------------------------------
    def next_link(self):
        a = self.args
        root = self.work / "history"
        log(f"generating the {a.size} history")
        h = History(str(root), a.size, seed=a.seed)
        for _ in range(h.cfg["snapshots"]):
            h.rotate()
        stats = tree_stats(str(root))
        log(f"  {stats}")
        # Before the rotation: the chain's base, mksquashfs's image, restic's first backup.
        log("base link, mksquashfs image and restic's first backup (history before the rotation)")
        base, bdir = self.run_link(root, None, "base", start=True)
        state0 = self.work / "state0"
        shutil.copy(bdir / "index", state0)
        mk0 = self.work / "mk0.sqfs"
        measure(["mksquashfs", str(root), str(mk0), "-comp", "zstd", "-Xcompression-level", self.level, "-b",
                 "131072", "-noappend", "-no-progress", "-quiet"])  # fmt: skip
        subprocess.run(["restic", "-r", str(self.work / "restic"), "init", "--quiet"], env=self.restic_env,
                       check=True, capture_output=True)  # fmt: skip
        r1 = measure(["restic", "-r", str(self.work / "restic"), "backup", "--quiet", str(root)], env=self.restic_env)
        repo1 = self.work / "restic-after-first"
        shutil.copytree(self.work / "restic", repo1, symlinks=True)
        log("one rotation")
        h.rotate()
        h.close()
        newest = root / "daily.0"

        def snap_link():
            s, d = self.run_link(root, state0, "next")
            s.extra["tail"] = (d / "tail").stat().st_size
            return s

        def snap_link_py():
            d = self.work / "link-py"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            shutil.copy(state0, d / "index")
            code = ("import sys, snap_core; snap_core.chain_link(sys.argv[1], sys.argv[2], sys.argv[3], "
                    f"level={self.level})")  # fmt: skip
            return measure([PY, "-c", code, str(root), str(d / "index"), str(d / "tail")])

        def full_pack():
            img = self.work / "full.sqfs"
            img.unlink(missing_ok=True)
            s = measure([*SNAP, "pack", "--quiet", "--compressor", "zstd", "--level", self.level, str(root), str(img)])
            s.extra = {"image": img.stat().st_size}
            return s

        def mk_append():
            img = self.work / "app.sqfs"
            shutil.copy(mk0, img)
            before = img.stat().st_size
            s = measure(["mksquashfs", str(newest), str(img), "-keep-as-directory", "-comp", "zstd",
                         "-Xcompression-level", self.level, "-b", "131072", "-no-progress", "-quiet"])  # fmt: skip
            s.extra = {"added": img.stat().st_size - before}
            return s

        def repo_bytes(path):
            return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())

        def restic_second():
            shutil.rmtree(self.work / "restic")
            shutil.copytree(repo1, self.work / "restic", symlinks=True)
            before = repo_bytes(self.work / "restic")
            out = self.work / "restic.json"
            s = measure(["restic", "-r", str(self.work / "restic"), "backup", "--json", str(root)],
                        env=self.restic_env, stdout=out)  # fmt: skip
            summary = [json.loads(x) for x in out.read_text().splitlines() if '"summary"' in x][-1]
            s.extra = {"added": repo_bytes(self.work / "restic") - before, "raw": summary["data_added"]}
            return s

        log("measuring: snap link, snap full pack, mksquashfs append, restic second run")
        got = self.rounds([("link", snap_link), ("link (Python)", snap_link_py), ("full pack", full_pack),
                           ("mksquashfs append", mk_append), ("restic second run", restic_second)],
                          a.repeat)  # fmt: skip
        link = got["link"]
        tail = link[0].extra["tail"] + 96
        ls = link[0].extra["summary"]
        full = got["full pack"]
        image = full[0].extra["image"]
        app = got["mksquashfs append"]
        rs = got["restic second run"]
        lw, fw, aw, rw = med(link), med(full), med(app), med(rs)
        rss = max(s.rss_peak for s in link)
        restic_added = rs[0].extra["added"]
        self.lines += [
            f"## Next link after one rotation ({a.size} history: {h.cfg['snapshots']} snapshots, "
            f"{stats['entries']:,} entries, {stats['inodes']:,} inodes, {mb(stats['unique_bytes'])} unique)", "",
            table(["command", "wall (median)", "CPU", "peak RSS", "bytes written", "link/ref"], [
                ["snap link (Rust engine)", f"{lw:.2f} s", f"{med(link, 'cpu'):.2f} s", f"{rss / MIB:.1f} MiB",
                 f"{mb(tail)} (tail + super block)", ""],
                ["snap link (Python binding)", f"{med(got['link (Python)']):.2f} s",
                 f"{med(got['link (Python)'], 'cpu'):.2f} s",
                 f"{max(s.rss_peak for s in got['link (Python)']) / MIB:.1f} MiB", "", ""],
                ["snap-backup pack (full)", f"{fw:.2f} s", f"{med(full, 'cpu'):.2f} s",
                 f"{max(s.rss_peak for s in full) / MIB:.1f} MiB", mb(image), f"{lw / fw:.2f}×"],
                ["mksquashfs append of daily.0", f"{aw:.2f} s", f"{med(app, 'cpu'):.2f} s",
                 f"{max(s.rss_peak for s in app) / MIB:.1f} MiB", mb(app[0].extra["added"]), f"{lw / aw:.2f}×"],
                ["restic backup, second run", f"{rw:.2f} s", f"{med(rs, 'cpu'):.2f} s",
                 f"{max(s.rss_peak for s in rs) / MIB:.1f} MiB",
                 f"{mb(restic_added)} added to the repository ({mb(rs[0].extra['raw'])} of new data)",
                 f"{lw / rw:.2f}×"],
                ["(restic backup, first run)", f"{r1.wall:.2f} s", f"{r1.cpu:.2f} s", f"{r1.rss_peak / MIB:.1f} MiB",
                 "", ""],
                ["(base link, before the rotation)", f"{base.wall:.2f} s", f"{base.cpu:.2f} s",
                 f"{base.rss_peak / MIB:.1f} MiB", mb((bdir / "tail").stat().st_size), ""],
            ]),
            "",
            f"The link read {ls['new_files']:,} new files ({mb(ls['bytes_read'])}) and referenced "
            f"{ls['reused_files']:,} ({mb(ls['reused_bytes'])}) already in the image; the image is now "
            f"{mb(ls['image_bytes'])}, of which {mb(ls['dead_bytes'])} ({100 * ls['dead_ratio']:.1f} %) dead "
            "(data of the snapshot the rotation dropped).",
            "",
        ]  # fmt: skip
        ok = lambda c: "yes" if c else "**no**"  # noqa: E731
        self.targets += [
            ["link bytes ≤ 5 % of a full image", f"{tail / image * 100:.1f} % ({mb(tail)} of {mb(image)})",
             ok(tail / image <= TARGETS["bytes"])],
            ["link wall ≤ 0.1× snap's full pack", f"{lw / fw:.2f}× ({lw:.2f} vs {fw:.2f} s)",
             ok(lw / fw <= TARGETS["vs_pack"])],
            ["link wall ≤ 0.3× mksquashfs append", f"{lw / aw:.2f}× ({lw:.2f} vs {aw:.2f} s)",
             ok(lw / aw <= TARGETS["vs_append"])],
            ["link peak RSS ≤ 32 MiB", f"{rss / MIB:.1f} MiB", ok(rss <= TARGETS["rss"])],
            ["link wall ≤ 0.2× restic's second run", f"{lw / rw:.2f}× ({lw:.2f} vs {rw:.2f} s)",
             ok(lw / rw <= TARGETS["vs_restic_time"])],
            ["link bytes ≤ 1.5× restic's added bytes", f"{tail / restic_added:.2f}× ({mb(tail)} vs {mb(restic_added)})",
             ok(tail / restic_added <= TARGETS["vs_restic_bytes"])],
        ]  # fmt: skip
        shutil.rmtree(root)
        shutil.rmtree(self.work / "restic", ignore_errors=True)
        shutil.rmtree(repo1, ignore_errors=True)

    # -- a simulated year ---------------------------------------------------------------------
    def year(self):
        a = self.args
        root = self.work / "year"
        log(f"a simulated year: {a.size} file set, levels {YEAR_LEVELS}, {a.links} links, {a.every} rotations apart")
        h = History(str(root), a.size, seed=a.seed, levels=YEAR_LEVELS)
        state = self.work / "year-index"
        rows, chain_total, full_total, full = [], 0, 0, 0
        held = []  # (kind, bytes, day uploaded, chain's base day) of every piece; full archives apart
        base_day, number, prev_data, dead_ratio = 0, 0, 0, 0.0
        inventories = []  # the history's contents at each link, for the least any design can hold
        for n in range(a.links):
            for _ in range(a.every if n else 1):
                h.rotate()
            day = n * a.every
            # A new base when the chain reaches its maximum age or its image's dead share, as the
            # archive run does.
            start = n == 0 or day - base_day >= a.max_age_days or dead_ratio >= a.max_dead_ratio
            if start:
                base_day, number, prev_data = day, 0, 0
                shutil.rmtree(self.work / "year-pieces", ignore_errors=True)
            inventories.append(inventory(root))
            self.quiet()
            s, d = self.run_link(root, None if start else state, f"year-{n}", start=start)
            shutil.copy(d / "index", state)
            pieces = self.work / "year-pieces"
            pieces.mkdir(exist_ok=True)
            shutil.copy(d / "tail", pieces / f"tail-{number}")
            shutil.copy(d / "sb", pieces / "sb")
            self.year_last = s.extra
            info = s.extra["summary"]
            dead_ratio = info["dead_ratio"]
            tail = (d / "tail").stat().st_size + (0 if start else 96)
            data = info["data_bytes"] - prev_data
            prev_data = info["data_bytes"]
            held.append(("data", data, day, base_day))
            held.append(("meta", tail - data, day, base_day))
            number += 1
            img = self.work / "year-full.sqfs"
            img.unlink(missing_ok=True)
            if n % a.full_every == 0 or n == a.links - 1:
                subprocess.run([*SNAP, "pack", "--quiet", "--compressor", "zstd", "--level", self.level, str(root),
                                str(img)], check=True)  # fmt: skip
                full = img.stat().st_size
                if n == a.links - 1:  # the restore compares with it
                    self.year_full = self.work / "year-last-full.sqfs"
                    img.rename(self.year_full)
                else:
                    img.unlink()
            chain_total += tail
            full_total += full
            held.append(("full", full, day, day))
            rows.append([n, info["snapshots"], mb(tail), mb(full), f"{s.wall:.2f} s", f"{s.rss_peak / MIB:.1f} MiB",
                         f"{mb(info['dead_bytes'])} ({100 * info['dead_ratio']:.1f} %)"])  # fmt: skip
            shutil.rmtree(d)
            log(f"  link {n}: {mb(tail)}, full {mb(full)}, {s.wall:.2f} s, {s.rss_peak / MIB:.1f} MiB")
        h.close()
        self.year_pieces = self.work / "year-pieces"
        ratio = chain_total / full_total
        self.lines += [f"## A simulated year: {a.links} links, {a.every} daily rotations apart", "",
                       table(["link", "snapshots", "bytes written", "full archive", "link wall", "link RSS", "dead"],
                             rows), "",
                       f"Total written: chain {mb(chain_total)}, a full archive every time {mb(full_total)}: "
                       f"{ratio:.3f}×.", ""]  # fmt: skip
        self.targets.append(["a year: chain bytes ≤ 0.2× a full archive every time", f"{ratio:.3f}×",
                             "yes" if ratio <= TARGETS["year"] else "**no**"])  # fmt: skip
        self.year_cost(held, inventories)
        self.year_rss = [(r[0], r[5]) for r in rows]
        shutil.rmtree(root)

    def year_cost(self, held, inventories):
        """GiB-months held under lock and their cost at list prices, chain against a full archive
        every time. Locks as the archive run plans them: a full archive and a link's meta piece
        for retain_days, a data piece until its chain's base + max_age_days + retain_days. Billed
        at least the class's minimum storage duration (GLACIER 90 days, DEEP_ARCHIVE 180)."""
        a = self.args
        gib = float(1 << 30)
        rows = []
        for cls, price, minimum in (("GLACIER", 0.0036, 90), ("DEEP_ARCHIVE", 0.00099, 180)):
            retain = max(a.retain_days, minimum)
            months = {"chain": 0.0, "full": 0.0, "floor": 0.0}
            for kind, size, day, base in held:
                if kind == "data":
                    days = base + a.max_age_days + retain - day
                else:
                    days = retain
                months["full" if kind == "full" else "chain"] += size / gib * max(days, minimum) / 30
                if kind != "full":  # no lock plan can hold a piece for less than its own link needs
                    months["floor"] += size / gib * retain / 30
            least = lock_bound(inventories, a.every, retain)
            rows.append([cls, f"{retain} d", f"{months['chain']:.3f}", f"{months['full']:.3f}",
                         f"{months['chain'] / months['full']:.3f}×",
                         f"{months['floor'] / months['full']:.3f}×", f"{least:.3f}×",
                         f"{months['chain'] * price:.4f} USD", f"{months['full'] * price:.4f} USD"])  # fmt: skip
            if cls == "GLACIER":
                r = months["chain"] / months["full"]
                self.targets.append(["a year: GiB-months under lock ≤ 0.2× a full archive every time (GLACIER)",
                                     f"{r:.3f}×", "yes" if r <= TARGETS["year"] else "**no**"])  # fmt: skip
        self.lines += [f"### Held under lock over the year (a new base at {a.max_age_days} days or {a.max_dead_ratio:.0%} dead, "
                       "list prices)", "",
                       table(["class", "retention", "chain GiB-months", "full GiB-months", "ratio",
                              "floor (every piece held only its own retention)",
                              "least a whole-file design holds (each file's content once, uncompressed, from its "
                              "first archive to retention after its last)", "chain cost", "full cost"],
                             rows), ""]  # fmt: skip

    # -- encryption and the restore of a chain ------------------------------------------------
    def crypto(self):
        """snap's encrypt/decrypt (the Rust engine: examples/crypt) against gpg on the same
        input and key; with a year's chain: its pieces decrypted and assembled against gpg -d
        of the equivalent full image."""
        sys.path.insert(0, str(REPO))
        from tests.support.gpg import GnuPG

        a = self.args
        out = self.work / "crypto"
        out.mkdir()
        with GnuPG() as g:
            pub = g.export_public(out / "pub.asc")
            sec = g.export_secret(out / "sec.asc")
            genv = {**os.environ, "GNUPGHOME": str(g.home)}
            gpg = ["gpg", "--batch", "--yes", "--trust-model", "always", "--pinentry-mode", "loopback",
                   "--passphrase", ""]  # fmt: skip
            plain = out / "plain.bin"
            with open("/dev/urandom", "rb") as src, open(plain, "wb") as dst:
                for _ in range(a.crypt_mib):
                    dst.write(src.read(MIB))
            size = plain.stat().st_size
            rounds = self.rounds([
                ("gpg -z 0 -e", lambda: measure([*gpg, "-r", g.fingerprint, "-z", "0", "-o", str(out / "g.gpg"),
                                                 "-e", str(plain)], env=genv)),
                ("snap encrypt", lambda: measure([str(CRYPT), "encrypt", str(pub)], stdin=plain,
                                                 stdout=out / "s.gpg")),
                ("snap encrypt (no plaintext SHA-256)",
                 lambda: measure([str(CRYPT), "encrypt", str(pub)], stdin=plain, stdout=out / "s1.gpg",
                                 env={**os.environ, "NO_PLAINTEXT_SHA256": "1"})),
                ("snap encrypt (no ciphertext SHA-256: the archive's, whose upload hashes it)",
                 lambda: measure([str(CRYPT), "encrypt", str(pub)], stdin=plain, stdout=out / "s1.gpg",
                                 env={**os.environ, "NO_CIPHERTEXT_SHA256": "1"})),
                ("snap encrypt (neither: a chain piece's, hashed where it is read and uploaded)",
                 lambda: measure([str(CRYPT), "encrypt", str(pub)], stdin=plain, stdout=out / "s1.gpg",
                                 env={**os.environ, "NO_PLAINTEXT_SHA256": "1", "NO_CIPHERTEXT_SHA256": "1"})),
            ], a.repeat)  # fmt: skip
            drounds = self.rounds([
                ("gpg -d", lambda: measure([*gpg, "-o", str(out / "gd.bin"), "-d", str(out / "s.gpg")], env=genv)),
                ("snap decrypt", lambda: measure([str(CRYPT), "decrypt", str(sec)], stdin=out / "s.gpg",
                                                 stdout=out / "sd.bin")),
                ("snap decrypt (no ciphertext SHA-256, as restore since 2026-12-01)",
                 lambda: measure([str(CRYPT), "decrypt", str(sec)], stdin=out / "s.gpg", stdout=out / "sd1.bin",
                                 env={**os.environ, "NO_CIPHERTEXT_SHA256": "1"})),
            ], a.repeat)  # fmt: skip
            rows = []
            for name, ss in list(rounds.items()) + list(drounds.items()):
                w = med(ss)
                rss = max(x.rss_peak for x in ss) / MIB
                rows.append([name, f"{w:.2f} s", f"{med(ss, 'cpu'):.2f} s", f"{rss:.1f} MiB",
                             f"{size / w / 1e6:.0f} MB/s"])  # fmt: skip
            ge, se = med(rounds["gpg -z 0 -e"]), med(rounds["snap encrypt"])
            gd, sd = med(drounds["gpg -d"]), med(drounds["snap decrypt"])
            self.lines += [
                f"## Encrypt and decrypt: {size / 1e6:.0f} MB of random bytes, RSA 3072 key",
                "",
                table(["command", "wall", "CPU", "peak RSS", "throughput"], rows),
                "",
            ]
            self.targets += [
                ["encrypt ≥ 1.0× `gpg -z 0 -e`", f"{ge / se:.2f}× (CPU {med(rounds['snap encrypt'], 'cpu'):.2f} "
                 f"vs {med(rounds['gpg -z 0 -e'], 'cpu'):.2f} s)", "yes" if ge / se >= 1.0 else "**no**"],
                ["decrypt ≥ 1.0× `gpg -d`", f"{gd / sd:.2f}× (CPU {med(drounds['snap decrypt'], 'cpu'):.2f} "
                 f"vs {med(drounds['gpg -d'], 'cpu'):.2f} s)", "yes" if gd / sd >= 1.0 else "**no**"],
            ]  # fmt: skip
            for f in ("g.gpg", "s1.gpg", "gd.bin", "sd.bin", "sd1.bin", "plain.bin"):
                (out / f).unlink(missing_ok=True)
            if getattr(self, "year_pieces", None):
                self.chain_restore(out, g, genv, gpg, pub, sec)

    def chain_restore(self, out, g, genv, gpg, pub, sec):
        """The newest link of the year's chain, restored: every piece decrypted (snap), the
        image assembled with every range checked; against gpg -d of the same image encrypted
        whole."""
        last = self.year_last
        n = len(last["links"])
        enc = out / "pieces"
        enc.mkdir()
        for i in range(n):
            with open(self.year_pieces / f"tail-{i}", "rb") as src, open(enc / f"tail-{i}.gpg", "wb") as dst:
                subprocess.run([str(CRYPT), "encrypt", str(pub)], stdin=src, stdout=dst, check=True,
                               stderr=subprocess.DEVNULL)  # fmt: skip
        image = out / "image.sqfs"
        import snap_core

        tails = {i: str(self.year_pieces / f"tail-{i}") for i in range(n)}
        sbytes = (self.year_pieces / "sb").read_bytes()
        snap_core.chain_assemble(last["ranges"], sbytes, tails, str(image))
        with open(image, "rb") as src, open(out / "image.gpg", "wb") as dst:
            subprocess.run([str(CRYPT), "encrypt", str(pub)], stdin=src, stdout=dst, check=True,
                           stderr=subprocess.DEVNULL)  # fmt: skip
        size = image.stat().st_size
        image.unlink()
        # What a user without chains would restore from: a full archive of the same point.
        with open(self.year_full, "rb") as src, open(out / "full.gpg", "wb") as dst:
            subprocess.run([str(CRYPT), "encrypt", str(pub)], stdin=src, stdout=dst, check=True,
                           stderr=subprocess.DEVNULL)  # fmt: skip
        full_size = self.year_full.stat().st_size
        self.year_full.unlink()
        (out / "last.json").write_text(json.dumps({"ranges": last["ranges"]}))

        def snap_restore():
            (out / "restored.sqfs").unlink(missing_ok=True)
            return measure([str(RESTORE), str(sec), str(out / "last.json"), str(self.year_pieces / "sb"), str(enc),
                            str(out / "restored.sqfs")])  # fmt: skip

        def snap_restore_serial():
            (out / "restored.sqfs").unlink(missing_ok=True)
            return measure([str(RESTORE), str(sec), str(out / "last.json"), str(self.year_pieces / "sb"), str(enc),
                            str(out / "restored.sqfs")], env={**os.environ, "ONE_AT_A_TIME": "1"})  # fmt: skip

        def gpg_restore():
            return measure([*gpg, "-o", str(out / "gpg.sqfs"), "-d", str(out / "image.gpg")], env=genv)

        # The comparison: the files back, not only the image. unsquashfs cannot read a
        # pipe, so gpg -d writes the image first; snap unpacks with the real owners applied
        # (FAKE_SUPER), as snap-backup restore does, unsquashfs leaves rsync's xattrs.
        dest = out / "tree"
        q = shlex.quote

        def snap_files():
            shutil.rmtree(dest, ignore_errors=True)
            (out / "restored.sqfs").unlink(missing_ok=True)
            return measure(f"{q(str(RESTORE))} {q(str(sec))} {q(str(out / 'last.json'))} "
                           f"{q(str(self.year_pieces / 'sb'))} {q(str(enc))} {q(str(out / 'restored.sqfs'))} "
                           f"&& FAKE_SUPER=1 {q(str(CLI))} unpack {q(str(out / 'restored.sqfs'))} {q(str(dest))}",
                           shell=True)  # fmt: skip

        def gpg_files():
            shutil.rmtree(dest, ignore_errors=True)
            return measure(f"{' '.join(map(q, gpg))} -o {q(str(out / 'gpg.sqfs'))} -d {q(str(out / 'image.gpg'))} "
                           f"&& unsquashfs -q -n -d {q(str(dest))} {q(str(out / 'gpg.sqfs'))}",
                           shell=True, env=genv)  # fmt: skip

        def gpg_full_files():
            shutil.rmtree(dest, ignore_errors=True)
            return measure(f"{' '.join(map(q, gpg))} -o {q(str(out / 'full.sqfs'))} -d {q(str(out / 'full.gpg'))} "
                           f"&& unsquashfs -q -n -d {q(str(dest))} {q(str(out / 'full.sqfs'))}",
                           shell=True, env=genv)  # fmt: skip

        restore_args = [str(RESTORE), str(sec), str(out / "last.json"), str(self.year_pieces / "sb"), str(enc),
                        str(out / "restored.sqfs")]  # fmt: skip

        def snap_need(select: str):
            def go():
                shutil.rmtree(dest, ignore_errors=True)
                (out / "restored.sqfs").unlink(missing_ok=True)
                return measure(restore_args, env={**os.environ, "SELECT": select, "DEST": str(dest)})

            return go

        # The newest snapshot's time name in the chain's image; daily.0 in the full archive's.
        snap_need("")()
        newest = max(os.listdir(dest))
        server = sorted(os.listdir(dest / newest))[0]
        (out / "restored.sqfs").unlink(missing_ok=True)
        told = subprocess.run(restore_args, env={**os.environ, "SELECT": "", "DEST": str(out / "t1")},
                              capture_output=True, text=True, check=True).stderr.strip()  # fmt: skip
        (out / "restored.sqfs").unlink(missing_ok=True)
        told_server = subprocess.run(restore_args, env={**os.environ, "SELECT": f"{newest}/{server}",
                                                        "DEST": str(out / "t2")},
                                     capture_output=True, text=True, check=True).stderr.strip()  # fmt: skip
        shutil.rmtree(out / "t1")
        shutil.rmtree(out / "t2")

        def gpg_full_server():
            shutil.rmtree(dest, ignore_errors=True)
            return measure(f"{' '.join(map(q, gpg))} -o {q(str(out / 'full.sqfs'))} -d {q(str(out / 'full.gpg'))} "
                           f"&& unsquashfs -q -n -d {q(str(dest))} {q(str(out / 'full.sqfs'))} daily.0/{q(server)}",
                           shell=True, env=genv)  # fmt: skip

        got = self.rounds([("snap: every piece decrypted into the image (ranges checked)", snap_restore),
                           (SERIAL, snap_restore_serial),
                           ("gpg -d of the equivalent full image", gpg_restore),
                           (FILES_SNAP, snap_files), (FILES_NEED, snap_need("")), (FILES_GPG, gpg_files),
                           (FILES_FULL, gpg_full_files), (SERVER_SNAP, snap_need(f"{newest}/{server}")),
                           (SERVER_FULL, gpg_full_server)],
                          self.args.repeat)  # fmt: skip
        shutil.rmtree(dest, ignore_errors=True)
        s, gr = (
            got["snap: every piece decrypted into the image (ranges checked)"],
            got["gpg -d of the equivalent full image"],
        )
        pieces_bytes = sum((enc / f"tail-{i}.gpg").stat().st_size for i in range(n))
        self.lines += [f"## Restore of the newest link of the {n}-link chain ({mb(size)} image, "
                       f"{mb(pieces_bytes)} of pieces)", "",
                       table(["command", "wall", "CPU", "peak RSS", "image throughput"],
                             [[k, f"{med(v):.2f} s", f"{med(v, 'cpu'):.2f} s",
                               f"{max(x.rss_peak for x in v) / MIB:.1f} MiB", f"{size / med(v) / 1e6:.0f} MB/s"]
                              for k, v in got.items()]), "",
                       f"Pieces decrypted: the whole tree: {decrypted(told)}; one server ({server}): "
                       f"{decrypted(told_server)}.", ""]  # fmt: skip
        r = med(gr) / med(s)
        rd = med(gr) / med(got[SERIAL])
        self.targets.append([f"restore of link {n - 1} ≥ 1.0× gpg -d of the full image (the image only)",
                             f"{r:.2f}× ({rd:.2f}× one piece at a time, as before 2026-12-02)",
                             "yes" if r >= 1.0 else "**no**"])  # fmt: skip
        rf = med(got[FILES_GPG]) / med(got[FILES_NEED])
        rff = med(got[FILES_FULL]) / med(got[FILES_NEED])
        rs = med(got[SERVER_FULL]) / med(got[SERVER_SNAP])
        self.targets.append(
            [
                f"restore of one server out of link {n - 1} (recorded, no target)",
                f"{rs:.2f}× `gpg -d` + `unsquashfs` of a full archive of the same point",
                "–",
            ]
        )
        self.targets.append([f"restore of link {n - 1}, the files, ≥ 1.0× `gpg -d` + `unsquashfs` (the issue's)",
                             f"{rf:.2f}× of the same image; {rff:.2f}× of a full archive of the same point "
                             f"({mb(full_size)}, no dead data)", "yes" if min(rf, rff) >= 1.0 else "**no**"])  # fmt: skip

    def report(self) -> str:
        head = ["# Chains: next link and a simulated year", "",
                f"`bench/chain.py {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d %H:%M')}, zstd level "
                f"{self.level}, work directory {self.work.parent}, load average now "
                f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}.", "",
                table(["target", "measured", "met?"], self.targets), ""]  # fmt: skip
        return "\n".join(head + self.lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--level", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--year", action="store_true", help="also simulate a year of links")
    ap.add_argument("--only-year", action="store_true")
    ap.add_argument("--crypto", action="store_true", help="also encryption, decryption, a chain's restore")
    ap.add_argument("--crypt-mib", type=int, default=1000)
    ap.add_argument("--links", type=int, default=26)
    ap.add_argument("--every", type=int, default=14, help="rotations between links (default 14)")
    ap.add_argument("--full-every", type=int, default=1, help="measure the full archive every N links")
    ap.add_argument("--max-age-days", type=int, default=180, help="a new base when the chain is this old")
    ap.add_argument("--max-dead-ratio", type=float, default=0.5, help="... or when this share of its data is dead")
    ap.add_argument("--retain-days", type=int, default=90)
    ap.add_argument("--workdir")
    ap.add_argument("--max-load", type=float, default=None)
    ap.add_argument("--wait", type=float, default=300)
    ap.add_argument("--output", default="-")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/chain.py runs as root (the history has owners and device nodes)")
    for tool in ("mksquashfs", "restic", "rsync"):
        if shutil.which(tool) is None:
            sys.exit(f"missing {tool} (restic: apt-get install restic, for the benchmark only)")
    for crate, example in (("snap-pack", "snap_pack_cli"), ("snap-crypt", "crypt"), ("snap-restore", "chain_restore")):
        subprocess.run(["cargo", "build", "--release", "-p", crate, "--example", example], cwd=REPO,
                       check=True, capture_output=True)  # fmt: skip
    b = ChainBench(args)
    try:
        if not args.only_year:
            b.next_link()
        if args.year or args.only_year:
            b.year()
        if args.crypto:
            b.crypto()
        text = b.report()
    finally:
        if not args.keep:
            shutil.rmtree(b.work, ignore_errors=True)
    print(text)
    if args.output != "-":
        pathlib.Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
