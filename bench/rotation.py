"""Rotation of the default bench fleet, before and after issue 11, side by side.

before: what snap did until issue 11 — rsnapshot syncs each jail's `data/`
        in place over `.sync` as root (`rsync -aHAXS --delete`, link_dest 0),
        then `cp -al .sync recent.0`. Older snapshots share inodes (and so
        attributes) with `.sync`.
after:  `snap-backup rotate`: every server's last complete push (judged from
        root's jail.json) is read as its account through `snap-as-account`
        and written into a fresh `.sync/<id>` with `--link-dest` to the newest
        snapshot; room is checked first, the snapshot after; then rsnapshot
        renames (link_dest 1, sync_first 1).

Both rotate the same pushes of the same generated history (bench/gen_history.py,
3 servers, the oldest snapshot pushed first, then one push per round), on the
same filesystem, alternating who goes first. A round with no new push shows
the idle cost. The jails belong to throwaway system accounts this script
creates and removes (root only). Prints a Markdown section; with --output it
replaces the "Rotation" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_history  # noqa: E402
from measure import measure  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SNAP = str(pathlib.Path(sys.executable).with_name("snap-backup"))
AS_ACCOUNT = REPO / "salt" / "snap" / "files" / "snap-as-account"
LEVELS = [{"name": "recent", "keep": 6}, {"name": "daily", "keep": 14}]
HEADER = "## Rotation: before and after issue 11"


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def old_conf(base: pathlib.Path, jails: pathlib.Path, accounts: dict) -> str:
    """The rsnapshot.conf snap wrote before issue 11 (rotate.rs at c5b0066)."""
    lines = [
        "config_version\t1.2",
        f"snapshot_root\t{base / 'history'}/",
        "no_create_root\t1",
        "cmd_cp\t/bin/cp",
        "cmd_rm\t/bin/rm",
        "cmd_rsync\t/usr/bin/rsync",
        *(f"retain\t{lv['name']}\t{lv['keep']}" for lv in LEVELS),
        "verbose\t1",
        f"logfile\t{base / 'rsnapshot.log'}",
        f"lockfile\t{base / 'rsnapshot.pid'}",
        "sync_first\t1",
        "link_dest\t0",
        "rsync_short_args\t-aHAXS",
        "rsync_long_args\t--delete --numeric-ids --delete-excluded --fake-super",
    ]
    for account, minion_id in sorted(accounts.items(), key=lambda kv: kv[1]):
        lines.append(f"backup\t{jails / account / 'incoming' / 'data'}/\t{minion_id}/")
    return "\n".join(lines) + "\n"


class Site:
    """One backup server's jails and history under ``base``."""

    def __init__(self, base: pathlib.Path, accounts: dict, new: bool):
        self.base, self.accounts, self.new = base, accounts, new
        self.jails = base / "jails"
        self.seq = 0
        for d in (base, self.jails, base / "history", base / "state"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o711)
        os.chmod(self.jails, 0o711)
        os.chmod(base / "history", 0o700)
        conf = base / "rsnapshot.conf"
        if new:
            self.cfg = base / "server.json"
            cfg = {
                "jails_dir": str(self.jails),
                "history_dir": str(base / "history"),
                "rsnapshot_conf": str(conf),
                "as_account": str(AS_ACCOUNT),
                "accounts": accounts,
                "levels": LEVELS,
                "lock_wait": 5,
                "state_dir": str(base / "state"),
                "log_file": str(base / "rsnapshot.log"),
                "lock_file": str(base / "rsnapshot.pid"),
            }
            self.cfg.write_text(json.dumps(cfg))
            import snap_core

            conf.write_text(snap_core.rsnapshot_conf(json.dumps(cfg)))
            for account in accounts:
                uid, gid = ids(account)
                snap_core.prepare_jail(str(self.jails), account, uid, gid)
        else:
            conf.write_text(old_conf(base, self.jails, accounts))
            for account in accounts:
                (self.jails / account / "incoming" / "data").mkdir(parents=True)

    def push(self, snapshot: pathlib.Path):
        """Put each server's tree of ``snapshot`` where the receiving side
        leaves a complete push (not measured: that is the push's cost)."""
        self.seq += 1
        for account, minion_id in self.accounts.items():
            src = snapshot / minion_id
            home = self.jails / account
            if self.new:
                tree = home / "incoming" / f"tree.{self.seq}"
                sh("cp", "-a", f"{src}/", str(tree))
                uid, gid = ids(account)
                sh("chown", "-hR", f"{uid}:{gid}", str(tree))
                old = home / "incoming" / f"tree.{self.seq - 1}"
                if old.exists():
                    shutil.rmtree(old)
                info = {"seq": self.seq, "current": self.seq, "current_run": f"bench{self.seq}",
                        "current_finished": time.time()}  # fmt: skip
                (home / "jail.json").write_text(json.dumps(info))
            else:
                sh("rsync", "-aHAX", "--delete", f"{src}/", f"{home / 'incoming' / 'data'}/")

    def rotate_cmd(self) -> list[str]:
        if self.new:
            return [SNAP, "rotate", "--config", str(self.cfg), "recent"]
        conf = str(self.base / "rsnapshot.conf")
        return ["/bin/sh", "-c", f"rsnapshot -c {conf} sync && rsnapshot -c {conf} recent"]

    def inodes(self) -> tuple[int, int]:
        st = gen_history.tree_stats(str(self.base / "history"))
        return st["inodes"], st["unique_bytes"]


def ids(account: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(account)
    return pw.pw_uid, pw.pw_gid


def run(args) -> str:
    work = pathlib.Path(tempfile.mkdtemp(prefix="snap-bench-rot-", dir=args.workdir))
    os.chmod(work, 0o711)
    accounts = {f"snapbench-{s}": s for s in gen_history.SERVERS}
    made = []
    try:
        for account in accounts:
            sh("useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", account)
            made.append(account)
        print(f"generating the {args.size} bench history ...", file=sys.stderr)
        info = gen_history.generate(str(work / "gen"), args.size, args.seed)
        snaps = [work / "gen" / f"{gen_history.LEVEL}.{k}" for k in range(info["snapshots"] - 1, -1, -1)]
        snaps = snaps[-(args.pushes) :]
        sites = {
            "before": Site(work / "before", accounts, new=False),
            "after": Site(work / "after", accounts, new=True),
        }
        rows = []
        rounds = [("first push (all new)", snaps[0])]
        rounds += [(f"next push ({k})", s) for k, s in enumerate(snaps[1:], 1)]
        rounds.append(("no new push", None))
        for n, (label, snap) in enumerate(rounds):
            order = ["before", "after"] if n % 2 == 0 else ["after", "before"]
            for name in order:
                site = sites[name]
                if snap is not None:
                    site.push(snap)
                inodes0, bytes0 = site.inodes()
                sample = measure(site.rotate_cmd())
                inodes1, bytes1 = site.inodes()
                rows.append((label, name, sample, inodes1 - inodes0, bytes1 - bytes0))
                print(f"  {label:22} {name:6} {sample.wall:6.2f} s", file=sys.stderr)
        return report(info, rows, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        for account in made:
            subprocess.run(["userdel", account], check=False)


def report(info: dict, rows: list, args) -> str:
    out = [HEADER, ""]
    out.append(
        f"`bench/rotation.py` ({time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}): the "
        f"{info['size']} bench fleet ({len(info['servers'])} servers, {info['files_per_snapshot']:,} files "
        f"per snapshot), {args.pushes} pushes, one `recent` rotation after each, on "
        f"{os.path.realpath(args.workdir)}. *before*: rsnapshot syncing the jails in place as root "
        "(link_dest 0) then `cp -al`, as snap did until issue 11. *after*: `snap-backup rotate` (each jail "
        "read as its account, a fresh snapshot with `--link-dest`, room checked before, the snapshot "
        "checked after). Inodes and bytes: what the rotation added to history."
    )
    out += ["", "| round | rotation | wall | CPU | peak RSS | inodes added | bytes added | after/before |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    walls = {(label, name): s.wall for label, name, s, _, _ in rows}
    for label, name, s, di, db in rows:
        ratio = ""
        if name == "after":
            ratio = f"{s.wall / max(walls[(label, 'before')], 1e-9):.2f}×"
        out.append(f"| {label} | {name} | {s.wall:.2f} s | {s.cpu:.2f} s | {s.rss_peak / 2**20:.1f} MiB | "
                   f"{di:,} | {db / 1e6:.1f} MB | {ratio} |")  # fmt: skip
    nxt = [(walls[(lb, "before")], walls[(lb, "after")]) for lb in {r[0] for r in rows} if "next" in lb]
    if nxt:
        b = statistics.median(x for x, _ in nxt)
        a = statistics.median(y for _, y in nxt)
        out += ["", f"Median of the next-push rounds: before {b:.2f} s, after {a:.2f} s ({a / b:.2f}×)."]
    out.append("")
    return "\n".join(out)


def replace_section(doc: pathlib.Path, section: str):
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find(HEADER)
    if start >= 0:
        end = text.find("\n## ", start + len(HEADER))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="default", choices=sorted(gen_history.SIZES))
    ap.add_argument("--pushes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="/var/tmp", help="a disk-backed filesystem (default /var/tmp)")
    ap.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"), help="'-' for stdout only")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/rotation.py runs as root (accounts, owners, rotation as root)")
    section = run(args)
    print(section)
    if args.output != "-":
        replace_section(pathlib.Path(args.output), section)


if __name__ == "__main__":
    main()
