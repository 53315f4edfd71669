#!/usr/bin/env python3
"""snap against the reference tools, side by side in one run on the same tree.

    make bench                          # = .venv/bin/python bench/run.py
    bench/run.py --quick                # small tree, one round: a smoke run
    bench/run.py --sizes small,default,large --repeat 3

Generates rsnapshot-like histories (bench/gen_history.py) in a scratch
directory (tmpfs by default), then measures, each command alone in a
process of its own (bench/measure.py: wall, user+sys CPU of the process
tree, peak RSS of the process tree, peak temp disk):

- pack: ``snap-backup pack`` vs ``mksquashfs`` (zstd, same level and block
  size), at each tree size;
- encrypt: ``snap-backup encrypt`` vs ``gpg -z 0 --encrypt`` (same key, same
  image), and plain ``gpg --encrypt`` as the original scripts ran it;
- upload alone: snap-offsite (``OffsiteTarget.put_file``) vs boto3
  ``upload_file`` (what ``aws s3 cp`` does), to moto's S3 on 127.0.0.1;
- the whole pipeline: the original scripts' (mksquashfs, gpg --encrypt,
  upload; bench/original_pipeline.sh) vs ``snap-backup archive``;
- restore: one server out of the encrypted archive, snap vs ``gpg -d`` then
  ``unsquashfs``; decrypt and extract alone; one file from local history.

Rounds are interleaved (reference and snap alternate who goes first) and
the report gives the median with min-max. It prints Markdown and writes
docs/BENCHMARKS.md. Everything runs on loopback; what it starts it stops.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from gen_history import SIZES, generate  # noqa: E402
from measure import CommandFailed, Sample, measure  # noqa: E402

from tests.support.gpg import GnuPG  # noqa: E402
from tests.support.moto import Moto  # noqa: E402

PY = sys.executable
SNAP = [PY, "-m", "snap_core"]  # = snap-backup, with exactly this Python
SNAP_RESTORE = [*SNAP, "restore", "--quiet"]


def SNAP_RESTORE_LOCAL(history, snapshot: str, rel: str, dest) -> list[str]:
    """``snap-backup restore --history``: one path of one server at one snapshot."""
    server, path = rel.split("/", 2)[1:]
    return [*SNAP, "restore", "--quiet", "--history", str(history), "--server", server, "--snapshot", snapshot,
            "--path", "/" + path, "--to", str(dest)]  # fmt: skip


MIB = 1 << 20
PREFIX = "snap/backup1"
SELECT_SERVER = "web1"

TARGETS = {
    "pack_wall": 1.0,  # snap / mksquashfs, at most
    "pack_rss": 32 * MIB,  # bytes, at most, at any size
    "encrypt": 1.0,  # snap throughput / gpg -z 0, at least
    "pipeline": 0.3,  # snap wall / original wall, at most
    "restore": 1.0,  # gpg -d + unsquashfs wall / snap wall, at least
}


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


# -- machine ----------------------------------------------------------------------------------


def first_line(*cmd) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def pkg_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def machine(workdir: str) -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem = int(handle.readline().split()[1]) * 1024
    import snap_core

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "os": first_line("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "workdir_fs": first_line("stat", "-f", "-c", "%T", workdir),
        "load_start": os.getloadavg(),
        "tools": {
            "snap": snap_core.__version__,
            "mksquashfs": first_line("mksquashfs", "-version"),
            "libsquashfs": first_line("dpkg-query", "-W", "-f=${Version}", "libsquashfs1"),
            "gpg": first_line("gpg", "--version") + ", " + subprocess.run(
                ["gpg", "--version"], capture_output=True, text=True).stdout.splitlines()[1],
            "rsync": first_line("rsync", "--version"),
            "python": platform.python_version(),
            "boto3": pkg_version("boto3"),
            "moto": pkg_version("moto"),
        },
    }


# -- statistics -------------------------------------------------------------------------------


class Runs:
    """Repeated samples of one command."""

    def __init__(self, name: str, cmdline: str):
        self.name, self.cmdline = name, cmdline
        self.samples: list[Sample] = []
        self.extra: dict = {}

    def add(self, s: Sample):
        self.samples.append(s)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    @property
    def wall(self) -> float:
        return self.med("wall")

    @property
    def spread(self) -> float:
        walls = [s.wall for s in self.samples]
        return (max(walls) - min(walls)) / statistics.median(walls) if len(walls) > 1 else 0.0

    @property
    def rss(self) -> int:
        return max(s.rss_peak for s in self.samples)

    @property
    def disk(self) -> int:
        return max(s.disk_peak for s in self.samples)

    @property
    def loads(self) -> list[float]:
        return [s.load for s in self.samples]

    def wall_cell(self) -> str:
        walls = [s.wall for s in self.samples]
        if len(walls) == 1:
            return f"{walls[0]:.2f} s"
        return f"{self.wall:.2f} s ({min(walls):.2f}–{max(walls):.2f})"


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def runs_rows(runs: list[Runs], size_of=None, base: Runs | None = None, mbytes: int | None = None) -> list[list]:
    rows = []
    for r in runs:
        row = [r.name, r.wall_cell(), f"{r.med('cpu'):.2f} s", mib(r.rss)]
        if mbytes is not None:
            row.append(f"{mbytes / r.wall / 1e6:.0f} MB/s")
        if size_of is not None:
            row.append(size_of(r))
        row.append(mib(r.disk) if r.disk else "–")
        row.append(f"{r.wall / base.wall:.2f}×" if base is not None else "")
        rows.append(row)
    return rows


# -- the benchmark ----------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.level = args.level
        base = args.workdir or ("/dev/shm" if shutil.disk_usage("/dev/shm").free > 8 << 30 else tempfile.gettempdir())
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="snap-bench-", dir=base))
        self.work.chmod(0o700)
        self.trees: dict[str, dict] = {}
        self.results: dict = {}
        self.cmdlines: dict[str, str] = {}
        self.counter = 0

    # helpers
    def fresh(self, name: str) -> pathlib.Path:
        path = self.work / name
        if path.exists():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return path

    def scratch(self, name: str) -> pathlib.Path:
        path = self.fresh(name)
        path.mkdir(mode=0o700)
        return path

    def wait_for_quiet(self):
        if self.args.max_load is None:
            return
        deadline = time.monotonic() + self.args.wait
        while os.getloadavg()[0] > self.args.max_load and time.monotonic() < deadline:
            time.sleep(5)

    def rounds(self, variants: list[tuple[Runs, callable]], repeat: int):
        """Run each variant ``repeat`` times, alternating who goes first."""
        for i in range(repeat):
            self.wait_for_quiet()
            order = variants if i % 2 == 0 else variants[::-1]
            for runs, fn in order:
                runs.add(fn())

    def key(self, what: str) -> str:
        self.counter += 1
        return f"{PREFIX}/bench-{what}-{self.counter:03d}.sqfs.gpg"

    # setup
    def make_trees(self):
        for size in self.args.sizes:
            root = self.work / f"history-{size}"
            log(f"generating the {size} tree ({SIZES[size]})")
            self.trees[size] = {"root": root, **generate(str(root), size, seed=self.args.seed)}
            log(f"  {self.trees[size]}")

    def make_keys(self):
        self.gpg = GnuPG().__enter__()
        self.pub = self.gpg.export_public(self.work / "archive-key.asc")
        self.secret = self.gpg.export_secret(self.work / "archive-secret.asc")
        self.secret.chmod(0o600)
        # The backup server's keyring: the public key only (as the original scripts had).
        self.pubhome = self.scratch("gnupg-public")
        subprocess.run(["gpg", "--homedir", str(self.pubhome), "--batch", "--import", str(self.pub)],
                       check=True, capture_output=True)  # fmt: skip
        # Restore's agent is running before anything is timed.
        subprocess.run(["gpgconf", "--homedir", str(self.gpg.home), "--launch", "gpg-agent"], check=True)

    def close(self):
        if getattr(self, "gpg", None):
            self.gpg.__exit__(None, None, None)
            subprocess.run(["gpgconf", "--homedir", str(self.pubhome), "--kill", "all"], capture_output=True)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log(f"kept {self.work}")

    # commands
    def mksquashfs_cmd(self, src, image, level=None, comp="zstd"):
        cmd = ["mksquashfs", str(src), str(image), "-comp", comp, "-b", "131072", "-noappend",
               "-no-progress", "-quiet"]  # fmt: skip
        if comp == "zstd":
            cmd += ["-Xcompression-level", str(level or self.level)]
        return cmd

    def snap_pack_cmd(self, src, image):
        return [*SNAP, "pack", "--quiet", "--compressor", "zstd", "--level", str(self.level), str(src), str(image)]

    def gpg_encrypt_cmd(self, src, dst, compress=False):
        cmd = ["gpg", "--homedir", str(self.pubhome), "--batch", "--yes", "--trust-model", "always",
               "--recipient", self.gpg.fingerprint, "--output", str(dst)]  # fmt: skip
        return cmd + ([] if compress else ["-z", "0"]) + ["--encrypt", str(src)]

    def gpg_decrypt_cmd(self, src, dst):
        return ["gpg", "--homedir", str(self.gpg.home), "--batch", "--yes", "--pinentry-mode", "loopback",
                "--passphrase", "", "--output", str(dst), "--decrypt", str(src)]  # fmt: skip

    # 1. pack
    def bench_pack(self):
        self.results["pack"] = {}
        for size in self.args.sizes:
            src = self.trees[size]["root"]
            log(f"pack, {size} tree")
            mk, sn = Runs("mksquashfs", ""), Runs("snap-backup pack", "")
            mout, sout = self.scratch(f"pack-{size}-m"), self.scratch(f"pack-{size}-s")

            def run_mk():
                self.fresh(f"pack-{size}-m/m.sqfs")
                s = measure(self.mksquashfs_cmd(src, mout / "m.sqfs"), watch=str(mout))
                mk.extra["image"] = (mout / "m.sqfs").stat().st_size
                return s

            def run_snap():
                self.fresh(f"pack-{size}-s/s.sqfs")
                s = measure(self.snap_pack_cmd(src, sout / "s.sqfs"), watch=str(sout))
                sn.extra["image"] = (sout / "s.sqfs").stat().st_size
                return s

            self.rounds([(mk, run_mk), (sn, run_snap)], self.args.repeat)
            self.results["pack"][size] = (mk, sn)
            self.cmdlines["pack: mksquashfs"] = " ".join(self.mksquashfs_cmd("HISTORY", "IMAGE"))
            self.cmdlines["pack: snap"] = "snap-backup " + " ".join(self.snap_pack_cmd("HISTORY", "IMAGE")[3:])
            (mout / "m.sqfs").unlink()
            if size == self.args.main:
                self.image = sout / "s.sqfs"
            else:
                (sout / "s.sqfs").unlink()

    def bench_levels(self):
        """snap-backup pack at lower zstd levels on the main tree (one round each): what a
        lower level would buy in time and cost in size."""
        src = self.trees[self.args.main]["root"]
        out = self.scratch("levels")
        rows = []
        for level in self.args.levels:
            log(f"pack at zstd level {level}")
            self.fresh("levels/l.sqfs")
            cmd = [*SNAP, "pack", "--quiet", "--compressor", "zstd", "--level", str(level), str(src),
                   str(out / "l.sqfs")]  # fmt: skip
            rows.append((level, measure(cmd), (out / "l.sqfs").stat().st_size))
        # mksquashfs with its defaults (gzip level 9): what the original scripts most likely ran.
        log("mksquashfs with its defaults (gzip)")
        self.fresh("levels/l.sqfs")
        cmd = ["mksquashfs", str(src), str(out / "l.sqfs"), "-noappend", "-no-progress", "-quiet"]
        rows.append(("mksquashfs defaults (gzip 9)", measure(cmd), (out / "l.sqfs").stat().st_size))
        shutil.rmtree(out)
        self.results["levels"] = rows

    def bench_startup(self):
        """What starting Python and loading the core cost (part of every snap-backup figure).

        Measured as installed: pip compiles a wheel's modules to bytecode when
        it installs them, but a checkout run with PYTHONDONTWRITEBYTECODE (as CI
        and this machine are) would compile them again on every start, some 50
        ms of every snap-backup command. So they are compiled once first."""
        import compileall  # noqa: PLC0415

        import snap_core  # noqa: PLC0415

        compileall.compile_dir(str(pathlib.Path(snap_core.__file__).parent), quiet=1)
        runs = Runs("snap-backup version", "")
        self.rounds([(runs, lambda: measure([*SNAP, "version"]))], 5)
        self.results["startup"] = runs

    # 2. encrypt
    def bench_encrypt(self):
        """Both tools on the same input: the main tree's image, repeated until it is at
        least --encrypt-mib (so that starting a process is not what is measured)."""
        log("encrypt")
        out = self.scratch("encrypt")
        # The real archive of the main image: what upload and restore use (not timed).
        self.ciphertext = self.work / "archive.sqfs.gpg"
        with open(self.image, "rb") as src, open(self.ciphertext, "wb") as dst:
            subprocess.run([*SNAP, "encrypt", "--quiet", "--recipient", str(self.pub)], stdin=src, stdout=dst,
                           check=True, stderr=subprocess.DEVNULL)  # fmt: skip
        plain = out / "input.bin"
        image = self.image.read_bytes()
        copies = max(1, -(-(self.args.encrypt_mib * MIB) // len(image)))
        with open(plain, "wb") as handle:
            for _ in range(copies):
                handle.write(image)
        del image
        size = plain.stat().st_size
        g0, sn, gz = Runs("gpg -z 0 --encrypt", ""), Runs("snap-backup encrypt", ""), Runs("gpg --encrypt (zlib)", "")

        def run_gpg():
            self.fresh("encrypt/g.gpg")
            return measure(self.gpg_encrypt_cmd(plain, out / "g.gpg"))

        def run_snap():
            self.fresh("encrypt/s.gpg")
            return measure([*SNAP, "encrypt", "--quiet", "--recipient", str(self.pub)],
                           stdin=plain, stdout=out / "s.gpg")  # fmt: skip

        def run_gz():
            self.fresh("encrypt/z.gpg")
            s = measure(self.gpg_encrypt_cmd(self.image, out / "z.gpg", compress=True))
            gz.extra["out"] = (out / "z.gpg").stat().st_size
            return s

        self.rounds([(g0, run_gpg), (sn, run_snap)], max(self.args.repeat, 5) if not self.args.quick else 1)
        self.rounds([(gz, run_gz)], 1)
        g0.extra["out"] = (out / "g.gpg").stat().st_size
        sn.extra["out"] = (out / "s.gpg").stat().st_size
        self.big_cipher = out / "s.gpg"
        (out / "g.gpg").unlink()
        (out / "z.gpg").unlink()
        plain.unlink()
        self.results["encrypt"] = (g0, sn, gz, size, copies, self.image.stat().st_size)
        self.cmdlines["encrypt: gpg"] = " ".join(self.gpg_encrypt_cmd("IN", "OUT")).replace(str(self.pubhome), "PUBHOME")
        self.cmdlines["encrypt: snap"] = "snap-backup encrypt --quiet --recipient archive-key.asc < IN > OUT"

    # 3. upload alone
    def moto_env(self, moto: Moto) -> dict:
        return {**os.environ, "S3_ENDPOINT": moto.endpoint, "S3_BUCKET": moto.BUCKET,
                "S3_CREDENTIALS": str(moto.credentials), "S3_PROFILE": "putonly"}  # fmt: skip

    def with_moto(self, fn):
        """Each upload gets a fresh S3 server (moto keeps objects in memory)."""
        with Moto(prefix=PREFIX) as moto:
            return fn(moto)

    def bench_upload(self):
        log("upload")
        bo, sn = Runs("boto3 upload_file", ""), Runs("snap-offsite put_file", "")

        def run(tool):
            def go(moto):
                return measure([PY, str(HERE / "s3_upload.py"), "--with", tool, str(self.ciphertext),
                                self.key(tool)], env=self.moto_env(moto), server_pid=moto.server.proc.pid)  # fmt: skip

            return lambda: self.with_moto(go)

        self.rounds([(bo, run("boto3")), (sn, run("snap"))], self.args.repeat)
        self.results["upload"] = (bo, sn, self.ciphertext.stat().st_size)

    # 4. the whole pipeline
    def bench_pipeline(self):
        log("whole pipeline")
        src = self.trees[self.args.main]["root"]
        orig, sn = Runs("original: mksquashfs, gpg --encrypt, upload", ""), Runs("snap-backup archive", "")
        owork = self.scratch("orig-work")
        swork = self.scratch("snap-work")

        def run_orig():
            def go(moto):
                env = {**self.moto_env(moto), "HISTORY": str(src), "WORK": str(owork),
                       "GNUPGHOME": str(self.pubhome), "RECIPIENT": self.gpg.fingerprint,
                       "LEVEL": str(self.level), "PYTHON": PY, "UPLOAD_KEY": self.key("original")}  # fmt: skip
                return measure(["sh", str(HERE / "original_pipeline.sh")], env=env, watch=str(owork),
                               server_pid=moto.server.proc.pid)  # fmt: skip

            return self.with_moto(go)

        def run_snap():
            def go(moto):
                cfg = {
                    "minion_id": "backup1",
                    "history_dir": str(src),
                    "work_dir": str(swork),
                    "state_dir": str(self.scratch("snap-state")),
                    "recipients": [{"file": str(self.pub)}],
                    "target": moto.target(),
                    "prefix": PREFIX,
                    "retain_days": 100,
                    "pack": {"compressor": "zstd", "level": self.level},
                }
                path = self.work / "archive.json"
                path.write_text(json.dumps(cfg))
                return measure([*SNAP, "archive", "--quiet", "--config", str(path)], watch=str(swork),
                               server_pid=moto.server.proc.pid)  # fmt: skip

            return self.with_moto(go)

        # What cron runs once chains are on (snap:archive:chain:enabled): the next archive, a
        # link after one rotation. Each round: a fresh history and S3 server, the base archive
        # (not measured), one rotation, then the measured run.
        nxt = Runs("snap-backup archive, chain on: the next run (a link after one rotation)", "")

        def run_next():
            root = self.fresh("next-history")
            _, h = generate(str(root), self.args.main, seed=self.args.seed, keep=True)
            nwork, nstate = self.scratch("next-work"), self.scratch("next-state")

            def go(moto):
                cfg = {
                    "minion_id": "backup1",
                    "history_dir": str(root),
                    "work_dir": str(nwork),
                    "state_dir": str(nstate),
                    "recipients": [{"file": str(self.pub)}],
                    "target": moto.target(),
                    "prefix": PREFIX,
                    "retain_days": 100,
                    "pack": {"compressor": "zstd", "level": self.level},
                    "chain": {"enabled": True},
                }
                path = self.work / "archive-next.json"
                path.write_text(json.dumps(cfg))
                cmd = [*SNAP, "archive", "--quiet", "--config", str(path)]
                subprocess.run(cmd, check=True, capture_output=True)
                h.rotate()
                s = measure(cmd, watch=str(nwork), server_pid=moto.server.proc.pid)
                links = json.loads((nstate / "chain" / "state.json").read_text())["links"]
                if len(links) != 2:
                    raise RuntimeError(f"the next run was not a link: the chain has {len(links)} links")
                return s

            try:
                return self.with_moto(go)
            finally:
                h.close()
                shutil.rmtree(root, ignore_errors=True)

        self.rounds([(orig, run_orig), (sn, run_snap), (nxt, run_next)], self.args.repeat)
        self.results["pipeline"] = (orig, sn, nxt)
        self.cmdlines["pipeline: original"] = (
            "bench/original_pipeline.sh: mksquashfs HISTORY W/history.sqfs -comp zstd "
            f"-Xcompression-level {self.level} -noappend; gpg --trust-model always --recipient FPR "
            "--output W/history.sqfs.gpg --encrypt W/history.sqfs; bench/s3_upload.py --with boto3 "
            "W/history.sqfs.gpg KEY; rm W/*"
        )
        self.cmdlines["pipeline: snap"] = (
            "snap-backup archive --quiet --config archive.json (history_dir HISTORY, work_dir W, "
            f"pack zstd level {self.level}, target: the moto bucket as the put-only profile)"
        )

    # 5. restore
    def bench_restore(self):
        log("restore")
        sel = f"daily.0/{SELECT_SERVER}"
        stage = self.scratch("restore-staging")
        env = {**os.environ, "TMPDIR": str(stage)}
        ref, sn = Runs(f"gpg -d, then unsquashfs {sel}", ""), Runs("snap restore --from-file --select", "")
        gd, sd = Runs("gpg -d (encrypt's input)", ""), Runs("snap decrypt_file (encrypt's input)", "")
        us, su = Runs(f"unsquashfs {sel}", ""), Runs(f"snap unpack {sel} (fake-super applied)", "")

        def run_ref():
            dest = self.fresh("restore-ref")
            img = stage / "image.sqfs"
            cmd = (f"{' '.join(self.gpg_decrypt_cmd(self.ciphertext, img))} && "
                   f"unsquashfs -q -n -d {dest} {img} {sel} >/dev/null && rm -f {img}")  # fmt: skip
            return measure(cmd, shell=True, watch=str(stage))

        def run_snap():
            dest = self.fresh("restore-snap")
            return measure([*SNAP_RESTORE, "--from-file", str(self.ciphertext), "--key", str(self.secret),
                            "--to", str(dest), "--select", sel, "--work-dir", str(stage)], env=env, watch=str(stage))  # fmt: skip

        self.rounds([(ref, run_ref), (sn, run_snap)], self.args.repeat)

        # The two stages alone.
        def run_gd():
            self.fresh("restore-staging/g.sqfs")
            return measure(self.gpg_decrypt_cmd(self.big_cipher, stage / "g.sqfs"))

        def run_sd():
            self.fresh("restore-staging/s.sqfs")
            return measure([PY, "-c", "import sys, snap_core; snap_core.decrypt_file(sys.argv[1], sys.argv[2], "
                            "open(sys.argv[3], 'rb').read())", str(self.big_cipher), str(stage / "s.sqfs"),
                            str(self.secret)])  # fmt: skip

        def run_us():
            dest = self.fresh("restore-ref")
            return measure(["unsquashfs", "-q", "-n", "-d", str(dest), str(self.image), sel])

        def run_su():
            dest = self.fresh("restore-snap")
            return measure([PY, "-c", "import sys, snap_core; snap_core.unpack(sys.argv[1], sys.argv[2], "
                            "select=[sys.argv[3]], apply_fake_super=True)", str(self.image), str(dest), sel])  # fmt: skip

        self.rounds([(gd, run_gd), (sd, run_sd)], self.args.repeat)
        self.rounds([(us, run_us), (su, run_su)], self.args.repeat)
        self.fresh("restore-staging/g.sqfs")
        self.fresh("restore-staging/s.sqfs")
        self.fresh("restore-ref")
        self.fresh("restore-snap")

        # One file from local history (an older snapshot) and from the local image.
        history = self.trees[self.args.main]["root"]
        snapshot = "daily.3" if (history / "daily.3").exists() else "daily.0"
        one = next(p for p in sorted((history / snapshot / SELECT_SERVER / "etc").rglob("*.conf")))
        rel = one.relative_to(history)
        rs = Runs("rsync --fake-super from history (reference)", "")
        ui = Runs("unsquashfs one file from the local image", "")
        si = Runs("snap unpack one file from the local image", "")
        variants = []

        def run_rs():
            dest = self.scratch("restore-one-ref")
            return measure(["rsync", "-aHAX", "--numeric-ids", "--fake-super", "-M--super", str(one), f"{dest}/"])

        def run_ui():
            dest = self.fresh("restore-one-ref")
            return measure(["unsquashfs", "-q", "-n", "-d", str(dest), str(self.image), str(rel)])

        def run_si():
            dest = self.fresh("restore-one-snap")
            return measure([PY, "-c", "import sys, snap_core; snap_core.unpack(sys.argv[1], sys.argv[2], "
                            "select=[sys.argv[3]], apply_fake_super=True)", str(self.image), str(dest), str(rel)])  # fmt: skip

        variants = [(rs, run_rs), (ui, run_ui), (si, run_si)]
        sl = Runs("snap-backup restore --history (local history)", "")

        def run_sl():
            dest = self.fresh("restore-one-snap")
            return measure(SNAP_RESTORE_LOCAL(history, snapshot, str(rel), dest))

        variants.insert(1, (sl, run_sl))
        self.rounds(variants, max(self.args.repeat, 5) if not self.args.quick else 1)
        self.results["restore"] = (ref, sn, gd, sd, us, su, [v[0] for v in variants], str(rel))
        self.cmdlines["restore: reference"] = (f"gpg --decrypt --output STAGING/image.sqfs ARCHIVE && "
                                               f"unsquashfs -q -n -d DEST STAGING/image.sqfs {sel}")  # fmt: skip
        self.cmdlines["restore: snap"] = f"snap-backup restore --from-file ARCHIVE --key SECRET --to DEST --select {sel}"
        self.cmdlines["one file: reference"] = "rsync -aHAX --numeric-ids --fake-super -M--super HISTORY/PATH DEST/"

    # -- report --------------------------------------------------------------------------------

    def report(self, m: dict, started: float) -> str:
        a = self.args
        R = self.results
        lines = ["# Benchmarks", ""]
        lines.append(
            "snap against the tools the original scripts used, side by side in one run on the same "
            "generated history (`make bench`, i.e. `bench/run.py`; this file is its output). Every "
            "figure is one command in a process of its own: wall time, CPU (user+sys of the whole "
            "process tree), peak RSS (sum over the process tree, sampled, and at least the largest "
            "process's exact `ru_maxrss`), peak temp disk (bytes allocated in the work directory, "
            f"sampled). Each figure is the median of {a.repeat} rounds (min–max in brackets); "
            "reference and snap alternate who goes first. `snap-backup` figures include starting "
            f"Python and loading the core: `snap-backup version` takes {R['startup'].wall:.2f} s and "
            f"{mib(R['startup'].rss)} by itself."
        )
        lines += ["", "## Machine", ""]
        load_end = os.getloadavg()
        lines.append(table(["", ""], [
            ["CPU", f"{m['cpu']}, {m['cores']} cores"],
            ["memory", f"{m['memory'] / (1 << 30):.1f} GiB"],
            ["OS / kernel", f"{m['os']} / {m['kernel']}"],
            ["work directory", f"{m['workdir_fs']} ({self.work.parent})"],
            ["load average (1/5/15 min)", f"start {'/'.join(f'{x:.2f}' for x in m['load_start'])}, "
             f"end {'/'.join(f'{x:.2f}' for x in load_end)}; per measurement "
             f"{min(self.all_loads()):.2f}–{max(self.all_loads()):.2f}"],
            ["tools", ", ".join(f"{k} {v}" for k, v in m["tools"].items())],
            ["run", f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, "
             f"{(time.monotonic() - started) / 60:.1f} min, `bench/run.py {' '.join(sys.argv[1:])}`".rstrip()],
        ]))  # fmt: skip
        lines += ["", "## Trees", "",
                  "`bench/gen_history.py`: rsnapshot-style snapshots of three servers (`daily.0` newest), "
                  "stored as snap's history stores them (`rsync --fake-super`: ownership, devices and ACLs "
                  "in `user.rsync.*` xattrs); unchanged files are hardlinks across snapshots; ~2% of files "
                  "change per snapshot, a few are added, removed or change owner, the database dump is new "
                  "every day; a fifth of the files are incompressible.", ""]  # fmt: skip
        lines.append(table(
            ["size", "snapshots", "entries", "inodes", "unique data", "apparent data", "generated in"],
            [[s, t["snapshots"], f"{t['entries']:,}", f"{t['inodes']:,}", mb(t["unique_bytes"]),
              mb(t["apparent_bytes"]), f"{t['seconds']} s"] for s, t in self.trees.items()],
        ))  # fmt: skip
        lines += ["", "## Against the targets", ""]
        lines.append(table(["target", "measured", "met?"], self.target_rows()))
        lines += ["", "## Pack: `snap-backup pack` vs `mksquashfs` (zstd level "
                  f"{self.level}, 128 KiB blocks, all cores)", ""]
        rows = []
        for size, (mk, sn) in R["pack"].items():
            for r, base in ((mk, None), (sn, mk)):
                row = runs_rows([r], size_of=lambda r: mb(r.extra["image"]), base=base)[0]
                rows.append([size] + row)
        lines.append(table(["tree", "tool", "wall", "CPU", "peak RSS", "image", "temp disk", "snap/ref"], rows))
        if R.get("levels"):
            mk, sn = R["pack"][a.main]
            lines += ["", f"### Other levels, {a.main} tree (one round each)", "",
                      "`snap-backup pack` at other zstd levels, and `mksquashfs` with its defaults (gzip), "
                      "which is what the original scripts ran unless told otherwise.", ""]
            rows = [[f"zstd {self.level} (above)", f"{sn.wall:.2f} s", f"{sn.med('cpu'):.2f} s", mb(sn.extra["image"]),
                     "1.00×", "1.000×"]]  # fmt: skip
            for level, smp, size in R["levels"]:
                rows.append([level if isinstance(level, str) else f"zstd {level}", f"{smp.wall:.2f} s", f"{smp.cpu:.2f} s", mb(size), f"{smp.wall / sn.wall:.2f}×",
                             f"{size / sn.extra['image']:.3f}×"])  # fmt: skip
            lines.append(table(["level", "wall", "CPU", "image", f"wall vs {self.level}", f"size vs {self.level}"],
                               rows))  # fmt: skip
        if "encrypt" in R:
            g0, sn, gz, size, copies, isize = R["encrypt"]
            lines += ["", f"## Encrypt: {mb(size)} of the {a.main} tree's image ({mb(isize)}"
                      + (f", {copies} times over" if copies > 1 else "") + "), same public key", ""]
            rows = runs_rows([g0], size_of=lambda r: mb(r.extra["out"]), mbytes=size)
            rows += runs_rows([sn], size_of=lambda r: mb(r.extra["out"]), mbytes=size, base=g0)
            rows += runs_rows([gz], size_of=lambda r: mb(r.extra["out"]), mbytes=isize)
            for row in rows:
                row.pop(-2)  # no temp disk: output only
            lines.append(table(["tool", "wall", "CPU", "peak RSS", "throughput", "output", "time vs gpg -z 0"], rows))
            lines.append("")
            lines.append("`gpg --encrypt` without `-z 0` is what the original scripts ran: it compresses "
                         "the already compressed image with zlib (measured once, on the image itself).")
        if "upload" in R:
            bo, sn, size = R["upload"]
            lines += ["", f"## Upload alone: the ciphertext ({mb(size)}) to moto's S3 on 127.0.0.1", ""]
            rows = []
            for r, base in ((bo, None), (sn, bo)):
                rows.append([r.name, r.wall_cell(), f"{r.med('cpu'):.2f} s", mib(r.rss),
                             f"{size / r.wall / 1e6:.0f} MB/s", f"{r.med('server_cpu'):.2f} s",
                             f"{r.wall / base.wall:.2f}×" if base else ""])  # fmt: skip
            lines.append(table(["tool", "wall", "CPU (client)", "peak RSS", "throughput", "CPU (moto server)",
                                "snap/ref"], rows))  # fmt: skip
            lines.append("")
            lines.append("boto3 uses 8 MiB parts and 10 threads; snap-offsite its archive defaults "
                         "(64 MiB parts, 2 in flight, SHA-256 part checksums, Object Lock headers). moto, a "
                         "Python server, is the bottleneck for both: compare the server's CPU.")
        if "pipeline" in R:
            orig, sn, nxt = R["pipeline"]
            lines += ["", f"## The whole pipeline, {a.main} tree: history → off-site object", ""]
            rows = []
            for r, base in ((orig, None), (sn, orig), (nxt, orig)):
                rows.append([r.name, r.wall_cell(), f"{r.med('cpu'):.2f} s", mib(r.rss), mib(r.disk),
                             f"{r.med('server_cpu'):.2f} s", f"{r.wall / base.wall:.2f}×" if base else ""])
            lines.append(table(["pipeline", "wall", "CPU", "peak RSS", "peak temp disk", "CPU (moto)",
                                "snap/ref"], rows))  # fmt: skip
            lines.append("")
            lines.append("The original keeps two full-size temporary files (image and ciphertext); snap "
                         "keeps only the image and encrypts it straight into the multipart upload. "
                         "snap's run also checks the keys and history first, writes the manifest object "
                         "and its records; each pipeline run gets a fresh moto server. With chains on, "
                         "the next run packs, encrypts and uploads only what the rotation added (its "
                         "round: a fresh history and server, the base archive, one rotation, then the "
                         "measured run); the original packs the whole history every time.")
        if "restore" in R:
            ref, sn, gd, sd, us, su, one, rel = R["restore"]
            lines += ["", f"## Restore: one server (`daily.0/{SELECT_SERVER}`) out of the encrypted archive", ""]
            rows = []
            for r, base in ((ref, None), (sn, ref), (gd, None), (sd, gd), (us, None), (su, us)):
                rows.append([r.name, r.wall_cell(), f"{r.med('cpu'):.2f} s", mib(r.rss),
                             mib(r.disk) if r.disk else "–", f"{base.wall / r.wall:.2f}×" if base else ""])
            lines.append(table(["", "wall", "CPU", "peak RSS", "temp disk", "speed snap/ref"], rows))
            lines.append("")
            lines.append("snap: `snap-backup restore --from-file` (decrypt to a staging file that becomes the image "
                         "only after the MDC checked out, then extract the selection). "
                         "unsquashfs restores the files as history stores them (fake-super xattrs, owned by root); "
                         "snap also applies the real owners, modes and device nodes.")  # fmt: skip
            lines += ["", f"### One file (`{rel}`)", ""]
            rows = [[r.name, r.wall_cell(), f"{r.med('cpu'):.2f} s", mib(r.rss)] for r in one]
            lines.append(table(["", "wall", "CPU", "peak RSS"], rows))
        lines += ["", "## Command lines", ""]
        lines += [f"- {k}: `{v}`" for k, v in self.cmdlines.items()]
        lines += ["", "## Noise", "", self.noise()]
        notes = HERE / "NOTES.md"
        if notes.exists():
            lines += ["", notes.read_text().strip()]
        return "\n".join(lines) + "\n"

    def all_loads(self) -> list[float]:
        out = []
        for v in self.iter_runs():
            out += v.loads
        return out or [os.getloadavg()[0]]

    def iter_runs(self):
        R = self.results
        for pair in R.get("pack", {}).values():
            yield from pair
        for key in ("encrypt", "upload", "pipeline"):
            if key in R:
                yield from (x for x in R[key] if isinstance(x, Runs))
        if "restore" in R:
            yield from R["restore"][:6]
            yield from R["restore"][6]

    def noise(self) -> str:
        spreads = sorted(((r.spread, r.name) for r in self.iter_runs() if len(r.samples) > 1), reverse=True)
        if not spreads:
            return "One round only: no spread to report."
        med = statistics.median(s for s, _ in spreads)
        worst = ", ".join(f"{n} {s:.0%}" for s, n in spreads[:3])
        return (f"Spread of wall times between rounds ((max−min)/median): median {med:.0%}; largest: {worst}. "
                f"Load average per measurement: {min(self.all_loads()):.2f}–{max(self.all_loads()):.2f} on "
                f"{os.cpu_count()} cores.")  # fmt: skip

    def target_rows(self) -> list[list]:
        R = self.results
        rows = []

        def ok(good: bool) -> str:
            return "yes" if good else "**no**"

        pk = R.get("pack", {})
        if pk:
            ratios = {s: sn.wall / mk.wall for s, (mk, sn) in pk.items()}
            rss = {s: sn.rss for s, (mk, sn) in pk.items()}
            sizes = {s: sn.extra["image"] / mk.extra["image"] for s, (mk, sn) in pk.items()}
            rows.append([f"pack wall ≤ {TARGETS['pack_wall']:.1f}× mksquashfs at equal size",
                         ", ".join(f"{s}: {r:.2f}× (image {sizes[s]:.3f}×)" for s, r in ratios.items()),
                         ok(all(r <= TARGETS["pack_wall"] for r in ratios.values()))])  # fmt: skip
            base = R["startup"].rss if "startup" in R else 0
            rows.append([f"pack peak RSS ≤ {mib(TARGETS['pack_rss'])} at any size",
                         ", ".join(f"{s}: {mib(v)} (mksquashfs {mib(pk[s][0].rss)})" for s, v in rss.items())
                         + (f"; the CLI process idle (Python + the core loaded) is {mib(base)} of that, so the "
                            "pack's own memory is " + ", ".join(f"{s}: {mib(v - base)}" for s, v in rss.items())
                            if base else ""),
                         ok(all(v <= TARGETS["pack_rss"] for v in rss.values()))
                         + (" for the CLI process; " + ok(all(v - base <= TARGETS["pack_rss"] for v in rss.values()))
                            + " for the pack itself" if base else "")])  # fmt: skip
        if "encrypt" in R:
            g0, sn, _, size, _, _ = R["encrypt"]
            r = g0.wall / sn.wall
            rows.append([f"encrypt throughput ≥ {TARGETS['encrypt']:.1f}× `gpg -z 0`",
                         f"{r:.2f}× ({size / sn.wall / 1e6:.0f} vs {size / g0.wall / 1e6:.0f} MB/s)",
                         ok(r >= TARGETS["encrypt"])])  # fmt: skip
        if "pipeline" in R:
            orig, sn, nxt = R["pipeline"]
            r, rn = sn.wall / orig.wall, nxt.wall / orig.wall
            rows.append([f"whole pipeline ≤ {TARGETS['pipeline']:.1f}× the original",
                         f"a full archive: {r:.2f}× ({sn.wall:.1f} vs {orig.wall:.1f} s); chain on, the next "
                         f"run: {rn:.2f}× ({nxt.wall:.1f} s)",
                         f"a full archive: {ok(r <= TARGETS['pipeline'])}; the next run with chains on: "
                         f"{ok(rn <= TARGETS['pipeline'])}"])  # fmt: skip
        if "restore" in R:
            ref, sn = R["restore"][:2]
            r = ref.wall / sn.wall
            rows.append([f"restore of one server ≥ {TARGETS['restore']:.1f}× `gpg -d` + `unsquashfs`",
                         f"{r:.2f}× ({sn.wall:.1f} vs {ref.wall:.1f} s)", ok(r >= TARGETS["restore"])])
            one = R["restore"][6]
            rows.append(["one file from local history (recorded, no target)",
                         "; ".join(f"{r.name}: {r.wall * 1000:.0f} ms" for r in one), "–"])
        return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description="snap vs the reference tools (writes docs/BENCHMARKS.md)")
    ap.add_argument("--sizes", default="small,default", help="tree sizes for pack, comma-separated "
                    f"(of {', '.join(SIZES)}); default small,default")  # fmt: skip
    ap.add_argument("--main", default=None, help="tree for the other stages (default: the largest of --sizes "
                    "up to 'default')")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3, help="rounds per measurement (default 3)")
    ap.add_argument("--level", type=int, default=15, help="zstd level for both (default 15, snap's default)")
    ap.add_argument("--workdir", help="scratch parent (default /dev/shm when it has 8 GiB free, else $TMPDIR)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--encrypt-mib", type=int, default=512, help="encrypt/decrypt input size (default 512)")
    ap.add_argument("--quick", action="store_true", help="small tree, one round: a smoke run")
    ap.add_argument("--max-load", type=float, default=None,
                    help="before each round, wait (up to --wait s) until the 1-min load is below this")
    ap.add_argument("--wait", type=float, default=300)
    ap.add_argument("--only", default="pack,levels,encrypt,upload,pipeline,restore")
    ap.add_argument("--levels", default="3,6,9", help="extra zstd levels for snap-backup pack on the main tree")
    ap.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"), help="'-' for stdout only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = "small", 1
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.levels = [int(x) for x in args.levels.split(",") if x.strip() and int(x) != args.level]
    for s in args.sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}")
    order = list(SIZES)
    args.sizes.sort(key=order.index)
    if args.main is None:
        fitting = [s for s in args.sizes if order.index(s) <= order.index("default")]
        args.main = (fitting or args.sizes)[-1]
    elif args.main not in args.sizes:
        args.sizes.append(args.main)
    only = set(args.only.split(","))
    if os.geteuid() != 0:
        sys.exit("bench/run.py runs as root (the trees have owners and device nodes, as history does)")
    for tool in ("mksquashfs", "unsquashfs", "gpg", "gpgconf", "rsync", "setfacl"):
        if shutil.which(tool) is None:
            sys.exit(f"missing {tool}: run `make install`")

    started = time.monotonic()
    bench = Bench(args)
    m = machine(str(bench.work))
    log(f"work directory {bench.work} ({m['workdir_fs']}); {m['cpu']}, {m['cores']} cores")
    try:
        bench.make_keys()
        bench.make_trees()
        bench.bench_startup()
        bench.bench_pack()  # always: the other stages use its image
        if "levels" in only and args.levels:
            bench.bench_levels()
        if "encrypt" in only or "upload" in only or "restore" in only:
            bench.bench_encrypt()
        if "upload" in only:
            bench.bench_upload()
        if "pipeline" in only:
            bench.bench_pipeline()
        if "restore" in only:
            bench.bench_restore()
        text = bench.report(m, started)
    except CommandFailed as exc:
        sys.exit(f"bench: {exc}")
    finally:
        bench.close()
    print(text)
    if args.output != "-":
        pathlib.Path(args.output).write_text(text)
        log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
