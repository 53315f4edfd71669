"""One backup server, a simulated fleet: `state.apply snap.server`, masterless.

For each fleet size N: a generated mine of N servers (real Ed25519 public
keys, ids that reuse short names across two sites), a backup server under a
private root_dir, then `salt-call --local state.apply snap.server` twice: the
first run creates N real push accounts and jails, the second must change
nothing. Prints wall time, failed states and what changed beside the figures
measured before issue 14, then deletes every account, group, jail and crontab
line it made.

Run as root (it creates real users), one at a time on this machine:

    .venv/bin/python bench/fleet_scale.py --sizes 100,1000

Every step that changes the machine holds /tmp/snap-system.lock.

    .venv/bin/python bench/fleet_scale.py --pieces 10000

times, without root and without accounts, what the master computes per call
for N servers with realistic inputs: the ext_pillar for every id (one
backup server; three, rendezvous; three with a tenth of the fleet pinned in
snap:assignment), and what `salt-run snap.status` computes once the answers
are in (the servers of one backup server, the schedules, the verdicts, the
cross-check, Salt's table output). Publishing to N minions and waiting for
their answers is Salt's and is not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import json
import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import system  # noqa: E402

LOCK = "/tmp/snap-system.lock"
GROUP = "snap-bench"
GID = 290000
UID_RANGE = (250000, 289999)
MINION = "bench-backup"
# Landed main before issue 14 (docs/BENCHMARKS.md, the table).
TODAY = {
    100: ("3.4 s", "1.24 s", ""),
    300: ("9.7 s", "2.2 s", ""),
    1000: ("33.0 s", "8.75 s", "111 accounts failed; no-op rc=1"),
    3000: ("~55 s no-op (extrapolated)", "", ""),
    10000: ("", "~9 min (extrapolated)", ""),
}

MINE_MODULE = '''
"""Bench stand-in for Salt's mine: a generated fleet (bench/fleet_scale.py)."""
import json

__virtualname__ = "mine"
PATH = @PATH@


def __virtual__():
    return __virtualname__


def _load():
    with open(PATH, encoding="utf-8") as handle:
        return json.load(handle)


def get(tgt, fun, tgt_type="glob", **kwargs):
    data = _load().get(fun, {})
    if tgt == "*":
        return data
    return {tgt: data[tgt]} if tgt in data else {}


def send(name, *args, **kwargs):
    data = _load()
    data.setdefault(name, {})[__opts__["id"]] = __salt__[name]()
    with open(PATH, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    return True


def update(*args, **kwargs):
    return True
'''


@contextlib.contextmanager
def machine_lock():
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ed25519_public_keys(n: int) -> list[str]:
    """n real Ed25519 public keys in OpenSSH form."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = []
    for _ in range(n):
        raw = Ed25519PrivateKey.generate().public_key()
        out.append(raw.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode())
    return out


def fleet_ids(n: int) -> list[str]:
    """Short names reused across two sites (the case that needed overrides before)."""
    return [f"h{i // 2:05d}.dc{1 + i % 2}.bench.example" for i in range(n)]


def write_mine(path: pathlib.Path, n: int) -> None:
    from snap_core import _rust

    mine = {}
    for minion_id, line in zip(fleet_ids(n), ed25519_public_keys(n)):
        key = _rust.parse_public_key(line)
        mine[minion_id] = {
            "id": minion_id,
            "line": f"{key['type']} {key['key']}",
            "type": key["type"],
            "fingerprint": key["fingerprint"],
            "comment": "",
            "bits": key["bits"],
        }
    path.write_text(json.dumps({"snap.pubkey": mine}))


def one_by_one_sls() -> str:
    """salt/snap/server.sls without its one-pass account state: each server's
    own state makes its account with one ``useradd``, as before issue 14's
    last change (``--compare``)."""
    text = (REPO / "salt" / "snap" / "server.sls").read_text()
    start = text.index("snap-accounts-made:")
    end = text.index('{%- set mine = salt["mine.get"]')
    return text[:start] + text[end:]


def setup(root: pathlib.Path, n: int, one_by_one: bool = False) -> pathlib.Path:
    conf = root / "conf"
    overlay = root / "overlay" / "snap"
    pillar = root / "pillar"
    for d in (conf, overlay, pillar):
        d.mkdir(parents=True)
    # The core is installed in this Python already: snap.core is a no-op here.
    (overlay / "core.sls").write_text("snap-core-tools:\n  test.nop: []\nsnap-core:\n  test.nop: []\n")
    if one_by_one:
        (overlay / "server.sls").write_text(one_by_one_sls())
    (conf / "minion").write_text(
        json.dumps(
            {
                "id": MINION,
                "file_client": "local",
                "root_dir": str(root),
                "file_roots": {"base": [str(root / "overlay"), str(REPO / "salt")]},
                "pillar_roots": {"base": [str(pillar)]},
                "pillar_mask_output": False,
                "log_level_logfile": "warning",
            }
        )
    )
    (pillar / "top.sls").write_text("base:\n  '*':\n    - bench\n")
    (pillar / "bench.sls").write_text(
        json.dumps(
            {
                "snap": {
                    "server": {
                        "group": GROUP,
                        "gid": GID,
                        "uid_range": list(UID_RANGE),
                        "manage_sshd_service": False,
                        "sudoers": str(root / "sudoers-snap"),
                    }
                }
            }
        )
    )
    mine = root / "mine.json"
    write_mine(mine, n)
    mods = root / "var" / "cache" / "salt" / "minion" / "extmods" / "modules"
    mods.mkdir(parents=True)
    (mods / "mine.py").write_text(MINE_MODULE.replace("@PATH@", repr(str(mine))))
    system.Sshd(root).write_config()
    for path in (root, *root.parents):
        if path == pathlib.Path("/"):
            break
        os.chmod(path, os.stat(path).st_mode | 0o111)
    return conf


def apply(conf: pathlib.Path) -> dict:
    salt_call = pathlib.Path(sys.executable).with_name("salt-call")
    cmd = [str(salt_call), "--local", f"--config-dir={conf}", "state.apply", "snap.server", "--out=json", "-l", "quiet"]
    with machine_lock():
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
    try:
        states = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError, TypeError):
        raise SystemExit(
            f"salt-call failed (rc {proc.returncode}): {proc.stderr[-2000:]}{proc.stdout[-2000:]}"
        ) from None
    if not isinstance(states, dict):
        raise SystemExit(f"salt-call returned no states: {states}")
    failed = [(k, v.get("comment", "")) for k, v in states.items() if v.get("result") is False]
    changed = sum(1 for v in states.values() if v.get("changes"))
    return {"wall": wall, "rc": proc.returncode, "failed": failed, "changed": changed, "states": len(states)}


def call_time(conf: pathlib.Path, *fun: str) -> tuple[float, int]:
    """Wall time of one ``salt-call --local <fun>`` (and the size of its JSON answer)."""
    salt_call = pathlib.Path(sys.executable).with_name("salt-call")
    cmd = [str(salt_call), "--local", f"--config-dir={conf}", *fun, "--out=json", "-l", "quiet"]
    with machine_lock():
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"salt-call {' '.join(fun)} failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return wall, len(proc.stdout)


def _rewrite(path: str, keep) -> None:
    """Rewrite one account table without the lines ``keep`` rejects (atomic rename)."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines(keepends=True)
    kept = [line for line in lines if keep(line.rstrip("\n").split(":"))]
    if len(kept) == len(lines):
        return
    st = os.stat(path)
    tmp = f"{path}.snap-bench"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, st.st_mode & 0o7777)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchown(handle.fileno(), st.st_uid, st.st_gid)
        handle.writelines(kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def remove_accounts(users: set[str], groups: set[str]) -> None:
    """Delete the bench's accounts and groups in one pass over each table.

    ``userdel`` rewrites /etc/passwd and /etc/shadow once per account (about
    0.1 s each at 1,000 accounts, O(N^2) in all): 10,000 would hold the
    machine lock for tens of minutes. Here the tables are rewritten once,
    under ``lckpwdf(3)`` (the lock shadow-utils takes). Only accounts this
    run made, with a uid in the bench's range, are removed; anything else
    goes through ``userdel``. The bench makes no home, mail spool, crontab,
    subuid or lastlog entry for them (useradd -M -l, SUB_UID_COUNT=0)."""
    import ctypes

    ours = {u for u in users if UID_RANGE[0] <= pwd.getpwnam(u).pw_uid <= UID_RANGE[1]}
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if ours and libc.lckpwdf() == 0:
        try:
            _rewrite("/etc/passwd", lambda f: f[0] not in ours)
            _rewrite("/etc/shadow", lambda f: f[0] not in ours)

            def group_line(f):
                if f[0] in groups:
                    return False
                return len(f) < 4 or not set(f[3].split(",")) & ours

            # A group of the machine never lists bench accounts (only the bench's group is theirs).
            _rewrite("/etc/group", group_line)
            if os.path.exists("/etc/gshadow"):
                _rewrite("/etc/gshadow", group_line)
        finally:
            libc.ulckpwdf()
        users = users - ours
    for name in sorted(users):
        subprocess.run(["userdel", name], capture_output=True)
    for name in sorted(groups - _gone(groups)):
        subprocess.run(["groupdel", name], capture_output=True)


def _gone(groups: set[str]) -> set[str]:
    out = set()
    for name in groups:
        try:
            grp.getgrnam(name)
        except KeyError:
            out.add(name)
    return out


def cleanup(root: pathlib.Path, users_before: set[str], groups_before: set[str]) -> float:
    t0 = time.monotonic()
    with machine_lock():
        remove_accounts(system.users() - users_before, system.groups() - groups_before)
    shutil.rmtree(root, ignore_errors=True)
    return time.monotonic() - t0


def run_size(n: int, one_by_one: bool = False) -> dict:
    root = pathlib.Path(tempfile.mkdtemp(prefix=f"snap-bench-scale-{n}-", dir="/var/tmp"))
    users_before, groups_before = system.users(), system.groups()
    crontab_before = system.crontab_lines()
    # `sshd -t` (state snap-sshd-check) needs sshd's privilege separation
    # directory, which only a running system sshd makes.
    made_privsep = not os.path.isdir("/run/sshd")
    if made_privsep:
        os.makedirs("/run/sshd", mode=0o755)
    try:
        conf = setup(root, n, one_by_one)
        first = apply(conf)
        second = apply(conf)
        made = sum(1 for u in system.users() - users_before if pwd.getpwnam(u).pw_gid == GID)
        # What the backup server answers `salt-run snap.status` with: it
        # opens every jail, takes its lock, reads its receipts.
        view = call_time(conf, "snap.backup_view")
        base = call_time(conf, "test.true")
    finally:
        with machine_lock():
            now = system.crontab_lines()
            if now != crontab_before:
                mine_lines = [line for line in now if MINION in line or str(root) in line]
                kept = [line for line in now if line not in mine_lines]
                subprocess.run(["crontab", "-u", "root", "-"], input="\n".join(kept) + "\n", text=True)
        removal = cleanup(root, users_before, groups_before)
        if made_privsep:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")
    how = "one useradd each" if one_by_one else "one pass"
    return {"n": n, "how": how, "first": first, "second": second, "accounts": made, "removal": removal,
            "view": view, "base": base}  # fmt: skip


# -- pieces: what salt-run snap.status and the ext_pillar compute, at N servers --------

BACKUPS = ["backup1.bench.example", "backup2.bench.example", "backup3.bench.example"]
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def _load(name: str, path: pathlib.Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(fn, repeat: int = 3) -> tuple[float, object]:
    """(median seconds of ``repeat`` calls, the last result)."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def status_inputs(ids: list[str], schedules: dict) -> tuple[dict, dict]:
    """The backup server's view and each server's own push records, as they
    look on a working fleet: each server pushed at its slots (21 records, the
    runner's HISTORY_LIMIT), the backup server holds the newest; 1 % broke
    off after it, 1 % are receiving now, 1 % have no account yet."""
    from snap_core import _rust

    view, own = {}, {}
    for i, minion_id in enumerate(ids):
        sched = schedules[minion_id]
        slots = []
        day = NOW - NOW % 86400
        while len(slots) < 21:
            for hour in sorted(sched["hours"], reverse=True):
                t = day + hour * 3600 + sched["minute"] * 60 + sched["second"]
                if t <= NOW - 600:
                    slots.append(t)
            day -= 86400
        slots = sorted(slots[:21])
        own[minion_id] = [
            {"run_id": f"r{i}-{k}", "started": _rfc3339(t), "finished": _rfc3339(t + 40), "result": "ok", "error": None}
            for k, t in enumerate(slots)
        ]
        if i % 100 == 99:
            continue  # no account yet
        last = slots[-1]
        view[minion_id] = {
            "account": _rust.account_name(minion_id),
            "last_good": {
                "run_id": f"r{i}-20",
                "started": last,
                "finished": last + 40,
                "files": 5000,
                "bytes": 1 << 30,
            },
            "last_failed": {"at": last + 300, "reason": "the data transfer did not complete (rsync exit 12)"}
            if i % 100 == 98
            else None,
            "running_since": NOW - 60 if i % 100 == 97 else None,
            "transfers": 42,
            "in_history": None,
        }
    return view, own


def pieces(n: int) -> list[tuple[str, float, str]]:
    """Time each piece the master runs per call, for n servers, with real inputs."""
    from snap_core import crosscheck, fleetstatus

    ids = fleet_ids(n)
    pillar_mod = _load("snap_bench_ext_pillar", REPO / "_pillar" / "snap.py")
    pillar_mod.__grains__ = {}
    runner = _load("snap_bench_runner", REPO / "_runners" / "snap.py")
    rows = []

    def ext_pillar_all(pillar):
        return {m: pillar_mod.ext_pillar(m, pillar)["snap"] for m in ids}

    one = {}
    several = {"snap": {"backup_servers": {b: {"host": b, "port": 22, "host_keys": []} for b in BACKUPS}}}
    pinned = {m: BACKUPS[i % 3] for i, m in enumerate(ids[: n // 10])}
    explicit = {"snap": dict(several["snap"], assignment=pinned)}
    t, out = _timed(lambda: ext_pillar_all(one))
    rows.append(("ext_pillar, one backup server: schedule (minute, second, hours)", t, f"{n:,} calls"))
    t, out3 = _timed(lambda: ext_pillar_all(several))
    per = {b: sum(1 for v in out3.values() if v["backup_server"]["minion_id"] == b) for b in BACKUPS}
    rows.append(
        (
            "ext_pillar, 3 backup servers (rendezvous)",
            t,
            "servers per backup server " + "/".join(map(str, per.values())),
        )
    )
    t, outx = _timed(lambda: ext_pillar_all(explicit))
    moved = sum(1 for m in ids if outx[m]["backup_server"] != out3[m]["backup_server"])
    rows.append(
        (f"ext_pillar, 3 backup servers, {len(pinned):,} pinned in snap:assignment", t, f"{moved:,} moved by the pins")
    )

    schedules = {m: {k: out[m]["schedule"][k] for k in ("minute", "second", "hours")} for m in ids}
    view, own = status_inputs(ids, schedules)
    mine = {m: {"schedule": s} for m, s in schedules.items()}

    t, mine_ids = _timed(lambda: runner._servers_of(BACKUPS[0], several, ids))
    rows.append(("runner: servers of backup1 among 3 (_servers_of)", t, f"{len(mine_ids):,} of {n:,}"))
    t, _ = _timed(lambda: runner._servers_of(BACKUPS[0], explicit, ids))
    rows.append((f"runner: the same with {len(pinned):,} pinned", t, ""))
    t, sched = _timed(lambda: {m: runner._valid_schedule((mine.get(m) or {}).get("schedule")) for m in ids})
    rows.append(("runner: schedules from the mine (_valid_schedule)", t, ""))
    clients = {m: own[m][-1] for m in ids}
    t, table = _timed(lambda: fleetstatus.build(ids, sched, view, clients, None, now=NOW))
    states = {}
    for row in table["servers"]:
        states[row["state"]] = states.get(row["state"], 0) + 1
    rows.append(
        ("fleetstatus.build (verdict per server)", t, ", ".join(f"{k} {v:,}" for k, v in sorted(states.items())))
    )
    t, result = _timed(lambda: crosscheck.check(ids, view, own, None, None, NOW))
    rows.append(("crosscheck.check (own records vs receipts)", t, f"{len(result.get('findings', [])):,} findings"))
    t, _ = _timed(
        lambda: crosscheck.mark(fleetstatus.build(ids, sched, view, clients, None, now=NOW), result, "not read"), 1
    )
    rows.append(("crosscheck.mark (+ a fresh build)", t, ""))
    import salt.output.table_out as table_out

    table["retcode"] = 1
    t, text = _timed(lambda: table_out.output(table, opts={"color": False, "extension_modules": ""}), 1)
    rows.append(("Salt's table outputter on the result", t, f"{len(text or ''):,} characters"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated fleet sizes (default 100,1000)")
    parser.add_argument(
        "--pieces",
        type=int,
        metavar="N",
        help="time what salt-run snap.status and the ext_pillar compute for N servers (no accounts, no root)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="each size also with one useradd per account (the state before the one-pass account state)",
    )
    args = parser.parse_args()
    if args.pieces:
        print(f"| piece (N = {args.pieces:,}) | wall (median of 3) | note |")
        print("|---|---:|---|")
        for name, seconds, note in pieces(args.pieces):
            print(f"| {name} | {seconds:.3f} s | {note} |", flush=True)
        return 0
    if os.geteuid() != 0:
        print("fleet_scale.py creates real accounts: run it as root", file=sys.stderr)
        return 2
    rows = []
    runs = [(int(s), False) for s in args.sizes.split(",")]
    if args.compare:
        runs = [(n, how) for n, _ in runs for how in (False, True)]
    for n, one_by_one in runs:
        res = run_size(n, one_by_one)
        rows.append(res)
        f, s = res["first"], res["second"]
        print(
            f"N={n} ({res['how']}): first {f['wall']:.1f} s ({len(f['failed'])} failed, {f['changed']} changed), "
            f"no-op {s['wall']:.1f} s ({len(s['failed'])} failed, {s['changed']} changed, rc {s['rc']}), "
            f"{res['accounts']} accounts made, removed in {res['removal']:.1f} s; snap.backup_view "
            f"{res['view'][0]:.1f} s ({res['view'][1]:,} bytes of JSON; salt-call test.true {res['base'][0]:.1f} s)",
            flush=True,
        )
        for name, comment in (f["failed"] + s["failed"])[:5]:
            print(f"  failed: {name}: {comment[:300]}")
    print()
    print("| N | accounts made | first run | no-op run | failed states | accounts | before (first / no-op) |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        before = TODAY.get(r["n"], ("", "", ""))
        note = f" ({before[2]})" if before[2] else ""
        print(
            f"| {r['n']:,} | {r['how']} | {r['first']['wall']:.1f} s | {r['second']['wall']:.1f} s | "
            f"{len(r['first']['failed'])} / {len(r['second']['failed'])} | {r['accounts']:,} | "
            f"{before[0]} / {before[1]}{note} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
