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

With --jails N (issue 14): N throwaway accounts (uids from 250000, one group,
no home; removed in one rewrite of the account tables, also on failure) and
N jails with small generated trees (--files each, about half of them the
same bytes in every jail), rotated by the real `snap-backup rotate` with the
default retention: the first rotation (all new), one after every server
pushed a small change, rotations with no new push until `recent` is full,
one with a push that also drops the oldest `recent`, then `daily`. Replaces
its own subsection of the Rotation section. Run it under the machine lock:
`flock /tmp/snap-system.lock .venv/bin/python bench/rotation.py --jails 1000`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
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


# -- --jails N: a fleet of small jails (issue 14) -------------------------------------

FLEET_HEADER = "### Rotation of a {n:,}-jail fleet, small trees (issue 14)"
FLEET_GROUP = "snapbench-rot"
FLEET_GID = 290001
FLEET_UID0 = 250000  # bench/fleet_scale.py's range (250000-289999), never the system range
FLEET_LEVELS = [{"name": "recent", "keep": 6}, {"name": "daily", "keep": 14},
                {"name": "weekly", "keep": 8}, {"name": "monthly", "keep": 24}]  # fmt: skip
DIRS = ["etc", "etc/app", "var", "var/lib", "var/lib/app", "home", "home/ops"]
FILE_DIRS = ["etc", "etc/app", "var/lib/app", "home/ops"]
T0 = 1_780_000_000  # mtime of the first push's files


class Fleet:
    """N accounts, their jails and one history under ``base``; pushes written
    as snap-receive leaves them (a new tree per push, unchanged files hard
    links to the previous tree, jail.json and a receipt written by root)."""

    def __init__(self, base: pathlib.Path, n: int, files: int, seed: int):
        self.base, self.n, self.files, self.seed = base, n, files, seed
        self.jails, self.history = base / "jails", base / "history"
        self.accounts = {f"snapbench-r{k:05d}": f"h{k:05d}.rot.bench.example" for k in range(n)}
        self.uids = {a: FLEET_UID0 + k for k, a in enumerate(self.accounts)}
        self.made: list[str] = []
        self.group_made = False
        self.seq = 0

    def make_accounts(self):
        import grp
        import pwd

        taken = {p.pw_uid for p in pwd.getpwall()}
        if taken & set(self.uids.values()) or FLEET_GID in {g.gr_gid for g in grp.getgrall()}:
            sys.exit(f"uids {FLEET_UID0}+{self.n} or gid {FLEET_GID} are taken: a bench left over? (getent passwd)")
        sh("groupadd", "-g", str(FLEET_GID), FLEET_GROUP)
        self.group_made = True
        for account, uid in self.uids.items():
            sh("useradd", "-M", "-l", "-N", "-u", str(uid), "-g", FLEET_GROUP, "-d", "/nonexistent",
               "-s", "/usr/sbin/nologin", "-p", "*", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0",
               "-K", f"UID_MAX={FLEET_UID0 + 39999}", account)  # fmt: skip
            self.made.append(account)

    def remove_accounts(self):
        """One rewrite of each account table under lckpwdf (bench/fleet_scale.py)."""
        import fleet_scale

        made = set(self.made)
        groups = {FLEET_GROUP} if self.group_made else set()
        if made or groups:
            fleet_scale.remove_accounts(made, groups)

    def setup(self):
        import snap_core

        for d in (self.base, self.jails, self.history, self.base / "state"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o711)
        os.chmod(self.jails, 0o711)
        os.chmod(self.history, 0o700)
        self.cfg = self.base / "server.json"
        cfg = {
            "jails_dir": str(self.jails),
            "history_dir": str(self.history),
            "rsnapshot_conf": str(self.base / "rsnapshot.conf"),
            "as_account": str(AS_ACCOUNT),
            "accounts": self.accounts,
            "levels": FLEET_LEVELS,
            "lock_wait": 5,
            "state_dir": str(self.base / "state"),
            "log_file": str(self.base / "rsnapshot.log"),
            "lock_file": str(self.base / "rsnapshot.pid"),
        }
        self.cfg.write_text(json.dumps(cfg))
        (self.base / "rsnapshot.conf").write_text(snap_core.rsnapshot_conf(json.dumps(cfg)))
        for account, uid in self.uids.items():
            snap_core.prepare_jail(str(self.jails), account, uid, FLEET_GID)

    def content(self, k: int, i: int, version: int) -> bytes:
        """File ``i`` of server ``k``: even files the same in every jail (a
        distribution's files), odd ones the server's own; 200 B - 6 KiB."""
        import random

        own = i % 2 == 1 or version > 0
        rng = random.Random(f"{self.seed}:{k if own else '*'}:{i}:{version}")
        size = rng.randint(200, 6000)
        return rng.randbytes(size // 2).hex().encode()[:size]

    def push(self, changed: int):
        """Every server completes one push: ``changed`` of its files rewritten
        and one added (0 and the first push: every file new)."""
        self.seq += 1
        for k, account in enumerate(self.accounts):
            uid = self.uids[account]
            home = self.jails / account
            tree = home / "incoming" / f"tree.{self.seq}"
            old = home / "incoming" / f"tree.{self.seq - 1}"
            for d in ["", *DIRS]:
                (tree / d).mkdir(mode=0o755, exist_ok=True)
                os.lchown(tree / d, uid, FLEET_GID)
            total = self.files + (self.seq - 1)
            rewrite = set(range(changed)) if self.seq > 1 else set(range(total))
            rewrite.add(total - 1)
            nbytes = 0
            for i in range(total):
                path = tree / FILE_DIRS[i % len(FILE_DIRS)] / f"f{i:03d}.conf"
                if i in rewrite or not old.exists():
                    data = self.content(k, i, self.seq - 1 if i < self.files else 0)
                    path.write_bytes(data)
                    os.lchown(path, uid, FLEET_GID)
                    t = T0 + 3600 * self.seq
                    os.utime(path, (t, t))
                    nbytes += len(data)
                else:
                    os.link(old / path.relative_to(tree), path)
            if old.exists():
                shutil.rmtree(old)
            now = time.time()
            info = {"seq": self.seq, "current": self.seq, "current_run": f"bench{self.seq}",
                    "current_finished": now}  # fmt: skip
            (home / "jail.json").write_text(json.dumps(info))
            receipt = {"started": now - 1, "finished": now, "dest": "data", "exit": 0,
                       "files": len(rewrite), "bytes": nbytes, "seq": self.seq, "run_id": f"bench{self.seq}"}  # fmt: skip
            with open(home / "receipts.jsonl", "a") as handle:
                handle.write(json.dumps(receipt) + "\n")
            os.chmod(home / "jail.json", 0o600)
            os.chmod(home / "receipts.jsonl", 0o600)

    def rotate(self, level: str):
        sample = measure([SNAP, "rotate", "--config", str(self.cfg), level], timeout=7200)
        rec = json.loads((self.base / "state" / "rotate-last.json").read_text())
        return sample, rec


class Inodes:
    """Every inode of history, so a round reports what it added and freed."""

    def __init__(self):
        self.seen: dict[tuple[int, int], int] = {}

    def update(self, root: pathlib.Path) -> tuple[int, int, int]:
        import stat

        now: dict[tuple[int, int], int] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                now[(st.st_dev, st.st_ino)] = st.st_size if stat.S_ISREG(st.st_mode) else 0
        added = now.keys() - self.seen.keys()
        freed = len(self.seen.keys() - now.keys())
        nbytes = sum(now[i] for i in added)
        self.seen = now
        return len(added), nbytes, freed


def run_fleet(args) -> str:
    work = pathlib.Path(tempfile.mkdtemp(prefix="snap-bench-rot1k-", dir=args.workdir))
    fleet = Fleet(work, args.jails, args.files, args.seed)
    rows, times = [], {}
    try:
        t = time.monotonic()
        fleet.make_accounts()
        fleet.setup()
        times["accounts"] = time.monotonic() - t
        inodes = Inodes()
        keep = FLEET_LEVELS[0]["keep"]
        plan = [
            ("first push (all new)", 0, "recent"),
            (f"every server changed {args.changed} files", args.changed, "recent"),
        ]
        plan += [(f"no new push (recent.{k})", None, "recent") for k in range(2, keep)]
        plan += [
            (f"every server changed {args.changed} files, recent full", args.changed, "recent"),
            ("daily", None, "daily"),
        ]
        for label, changed, level in plan:
            if changed is not None:
                t = time.monotonic()
                fleet.push(changed)
                times.setdefault("pushes", []).append(time.monotonic() - t)
            sample, rec = fleet.rotate(level)
            added, nbytes, freed = inodes.update(fleet.history)
            rows.append((label, level, sample, rec, added, nbytes, freed))
            print(f"  {label:40} {level:6} {sample.wall:7.2f} s  {rec['result']}  +{added:,} inodes", file=sys.stderr)
    finally:
        t = time.monotonic()
        try:
            fleet.remove_accounts()
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        times["cleanup"] = time.monotonic() - t
    return fleet_report(args, rows, times)


def fleet_report(args, rows: list, times: dict) -> str:
    n = args.jails
    out = [FLEET_HEADER.format(n=n), ""]
    load = os.getloadavg()
    out.append(
        f"`bench/rotation.py --jails {n} --files {args.files} --changed {args.changed}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at the end, "
        f"on {os.path.realpath(args.workdir)}): {n:,} real accounts and jails, {args.files} small files "
        f"(200 B-6 KiB) in {len(DIRS) + 1} directories per server, half of them the same bytes on every "
        f"server; each push rewrites {args.changed} files and adds one. `snap-backup rotate` with the "
        "default retention (6 recent, 14 daily, 8 weekly, 24 monthly); the pushes themselves are not "
        "measured. Inodes and bytes: what the rotation added to history (freed: what it dropped)."
    )
    out += ["", "| round | level | wall | CPU | peak RSS | per jail (median / max) | inodes added | "
            "bytes added | inodes freed | servers |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, level, s, rec, added, nbytes, freed in rows:
        secs = sorted(v.get("seconds", 0.0) for v in rec.get("servers", {}).values())
        per = f"{statistics.median(secs) * 1e3:.1f} / {secs[-1] * 1e3:.0f} ms" if secs else "-"
        acts: dict[str, int] = {}
        for v in rec.get("servers", {}).values():
            acts[v["action"]] = acts.get(v["action"], 0) + 1
        what = ", ".join(f"{c:,} {a}" for a, c in sorted(acts.items())) or rec.get("result", "")
        if rec.get("result") != "ok":
            what += f" (result {rec.get('result')})"
        out.append(f"| {label} | {level} | {s.wall:.1f} s | {s.cpu:.1f} s | {s.rss_peak / 2**20:.1f} MiB | "
                   f"{per} | {added:,} | {nbytes / 1e6:.2f} MB | {freed:,} | {what} |")  # fmt: skip
    out += ["", reading(n, rows)]
    recent = [s.wall for _, lv, s, *_ in rows if lv == "recent"]
    daily = [s.wall for _, lv, s, *_ in rows if lv == "daily"]
    worst = max(recent)
    out += [
        "",
        f"Setup (not measured above): {n:,} `useradd` and jails {times.get('accounts', 0):.0f} s, the pushes "
        f"{sum(times.get('pushes', [])):.0f} s; removing every account, the group and the trees "
        f"{times.get('cleanup', 0):.1f} s.",
        "",
        f"Cadence (salt/snap/defaults.yaml): `recent` at 04:00, 12:00 and 20:00, two hours after the push "
        f"hours 02, 10 and 18 begin, so one must end before the next push hour (6 h; a jail that is "
        f"mid-push is only retried, never blocked on); `daily` at 03:30 must end before `recent` at 04:00 "
        f"waits out its lock (30 min + lock_wait 5 min). Slowest `recent` here: {worst:.1f} s = "
        f"{worst / 21600:.2%} of its 6 h"
        + (f"; `daily` {max(daily):.1f} s of its 30 min" if daily else "")
        + f". Linear in servers (one at a time), 10,000 such servers: about {worst * 10000 / n / 60:.0f} min "
        "per `recent`, well inside 6 h; `daily` stays a rename, plus a deletion that grows like the drop above.",
        "",
    ]
    return "\n".join(out)


def reading(n: int, rows: list) -> str:
    """What the table says per server, per snapshot, and about dropping one."""
    by = {label: r for label, *r in rows}

    def per_jail(label: str) -> float:
        secs = [v.get("seconds", 0.0) for v in by[label][2].get("servers", {}).values()]
        return statistics.median(secs) * 1e3 if secs else 0.0

    changed = [lb for lb in by if lb.startswith("every server") and "full" not in lb]
    full = [lb for lb in by if lb.endswith("recent full")]
    idle = [lb for lb in by if lb.startswith("no new push")]
    text = []
    if changed and idle:
        text.append(
            f"Per server, whatever history holds: {per_jail(changed[0]):.0f} ms with a new push (one rsync "
            f"pair, its sender started as the account through `snap-as-account`, then a walk of the copy), "
            f"{per_jail(idle[0]):.0f} ms without (one `cp -al` of its previous snapshot and a walk)."
        )
        dirs = by[idle[0]][3]
        kept = sum(lv["keep"] for lv in FLEET_LEVELS)
        text.append(
            f"A rotation with nothing new still adds {dirs:,} inodes ({dirs / n:.1f} per server: `cp -al` "
            f"makes every directory anew, a block each); with the default {kept} snapshots "
            f"that is {kept * dirs:,} inodes for directories alone at this size, to size the history "
            "filesystem's inodes by."
        )
    if changed and full:
        extra = by[full[0]][1].wall - by[changed[0]][1].wall
        text.append(
            f"Dropping the oldest `recent` (the round with `recent` full) freed {by[full[0]][5]:,} inodes and "
            f"took {extra:+.1f} s against the same rotation without it. `daily` here is rsnapshot's rename "
            "of `recent.5`; once 14 dailies exist it also deletes `daily.13`, a deletion like that one."
        )
    return " ".join(text)


def replace_section(doc: pathlib.Path, section: str, header: str = HEADER):
    """Replace the section under ``header`` (to the next heading of its level
    or above; the Rotation section keeps its ### subsections), or append it."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find(header)
    if start >= 0:
        ends = [text.find(m, start + len(header)) for m in ("\n## ", "\n### ")]
        ends = [e for e in ends if e >= 0]
        end = min(ends) if ends else -1
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    elif header.startswith("### ") and HEADER in text:
        rot = text.find(HEADER)
        nxt = text.find("\n## ", rot + len(HEADER))
        at = nxt + 1 if nxt >= 0 else len(text)
        text = text[:at].rstrip("\n") + "\n\n" + section + "\n" + text[at:]
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
    ap.add_argument("--jails", type=int, default=0, help="N small jails of throwaway accounts (issue 14)")
    ap.add_argument("--files", type=int, default=30, help="with --jails: files per server")
    ap.add_argument("--changed", type=int, default=3, help="with --jails: files each push rewrites")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/rotation.py runs as root (accounts, owners, rotation as root)")
    if args.jails and not 0 < args.jails <= 39999:
        sys.exit("--jails: 1..39999 (the bench's uid range)")
    for sig in (signal.SIGTERM, signal.SIGHUP):  # clean up (finally) when stopped
        signal.signal(sig, lambda *_: sys.exit(1))
    section = run_fleet(args) if args.jails else run(args)
    print(section)
    if args.output != "-":
        header = FLEET_HEADER.format(n=args.jails) if args.jails else HEADER
        replace_section(pathlib.Path(args.output), section, header)


if __name__ == "__main__":
    main()
