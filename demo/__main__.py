"""`make demo`: snap's main job on a throwaway fleet on loopback.

A salt-master and the minions web1, db1 (servers) and backup1 (the backup
server, with a real sshd on a loopback port), each with its own root dir and
its own Python with only Salt in it, set up as the README's "Setting up a real
fleet" says: the release (make dist's wheel and SHA256SUMS) beside the formula
on the master's file server, the wheel pip-installed on the master, snap.core
installing it on every minion during highstate. Then push real files, rotate history, show two attacks refused (a read-back and a setuid bit planted in history),
archive the history off-site to a local S3 API under Object Lock and show a
delete refused, restore db1 from off-site, and print the fleet's status.
Everything started here is stopped, and the users, crontab lines and files
it made are removed, before it exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time

import yaml
from pytestshellutils.utils.ports import get_unused_localhost_port
from saltfactories.manager import FactoriesManager

from tests.conftest import REPO, private_root
from tests.support import loopback
from tests.support.fleet import MINIONS, Fleet, state_changes, state_failures
from tests.support.gpg import GnuPG
from tests.support.moto import Moto
from tests.support.restore import restore_server_and_compare
from tests.support.treegen import describe
from tests.support.wheel import release, salt_venv


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say()
    say(f"== {title}")


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def human(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def release_on_the_master(root: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """README steps 1 and 2: the release next to the formula on the master's
    file server, the wheel in the master's Python. Every machine gets a Python
    of its own with only Salt in it (a copy of .venv-salt)."""
    section("the release: make dist's wheel and SHA256SUMS beside the formula; the wheel into the master's Python")
    wheel, sums = release()
    check = subprocess.run(["sha256sum", "-c", sums.name], cwd=sums.parent, capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"sha256sum -c SHA256SUMS FAILED: {check.stdout}{check.stderr}")
    say(f"  sha256sum -c SHA256SUMS: {check.stdout.strip()}")
    formula = root / "srv" / "salt"
    shutil.copytree(REPO / "salt", formula, ignore=shutil.ignore_patterns("dist"))
    (formula / "snap" / "files" / "dist").mkdir()
    for artifact in (wheel, sums):
        shutil.copy(artifact, formula / "snap" / "files" / "dist")
    say(f"  {formula}/snap/files/dist/: {wheel.name} ({human(wheel.stat().st_size)}), SHA256SUMS")
    pythons = {name: salt_venv(root / "python" / name) for name in ("master", *MINIONS)}
    pip = [str(pythons["master"]), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)]
    started = time.monotonic()
    subprocess.run(pip, check=True)
    say(f"  master: pip install {wheel.name} ({time.monotonic() - started:.0f}s; salt-pip on a onedir master)")
    say(f"  web1, db1, backup1: Python with Salt only ({root / 'python'}/<id>); snap.core brings the rest")
    return formula, pythons


def deploy(fleet: Fleet) -> None:
    section("highstate: snap.core installs the wheel from the master, servers make their keys, backup1 their jails")
    runs = fleet.deploy()
    failures = state_failures(runs["first"]) + state_failures(runs["accounts"])
    if failures:
        raise SystemExit(f"highstate FAILED: {failures}")
    for minion_id, states in sorted(runs["first"].items()):
        core = next((r for r in states.values() if r.get("__id__") == "snap-core"), {})
        installed = ", ".join(core.get("changes") or {}) or "nothing (already there)"
        say(f"  {minion_id}: snap.core installed {installed} into {fleet.python_of(minion_id)}")
    changed = len(state_changes(runs["first"])) + len(state_changes(runs["accounts"]))
    say(f"  {changed} states changed something; a second highstate changes "
        f"{len(state_changes(fleet.highstate()))}")  # fmt: skip
    fleet.salt("mine.update")
    report = fleet.run("snap.fleet")
    say()
    say("What the master reads back (schedule from the ext_pillar, keys from the mine, re-validated):")
    say(table([[m, f"{r['minute']:02d}", ",".join(map(str, r["hours"])), r.get("account", "-"),
                 r.get("fingerprint", r["key"])] for m, r in sorted(report.items())],
              ["server", "minute", "hours", "account", "key fingerprint"]))  # fmt: skip


def push_and_rotate(fleet: Fleet) -> None:
    section("web1 and db1 push their files (the command cron runs), backup1 rotates history")
    for minion_id in fleet.clients:
        config = fleet.root_of(minion_id) / "etc" / "snap" / "client.json"
        # What cron runs: the Python snap.core installed the core into.
        proc = subprocess.run([fleet.python_of(minion_id), "-m", "snap_core", "--json", "push", "--quiet", "--no-splay",
                               "--config", str(config)], capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"push from {minion_id} failed: {proc.stderr}")
        rec = json.loads(proc.stdout)
        t = rec["transfer"]
        say(f"  {minion_id}: {rec['result']} in {rec['seconds']:.1f}s, {t['files']} entries, "
            f"{human(t['total_size'])}, sent {human(t['bytes_sent'])}")  # fmt: skip
    rot = fleet.salt("snap.rotate", "recent", tgt="backup1")
    say(f"  rotate recent: {rot['result']}; " + ", ".join(f"{m} {s['action']}" for m, s in rot["servers"].items()))
    say()
    say("What backup1 holds per server (its own records, not the servers' word):")
    view = fleet.salt("snap.backup_view", tgt="backup1")["servers"]
    history = fleet.root_of("backup1") / "srv" / "snap" / "history"
    rows = []
    for minion_id, v in sorted(view.items()):
        good = v["last_good"] or {}
        files = sum(1 for p in (history / "recent.0" / minion_id).rglob("*") if p.is_file())
        rows.append([minion_id, v["account"], "receiving" if v.get("in_progress") else "idle",
                     good.get("run_id", "-"), human(good.get("bytes")), f"{files} files in recent.0"])  # fmt: skip
    say(table(rows, ["server", "account", "jail", "last complete push", "received", "history"]))
    snapshots = sorted(p.name for p in history.iterdir())
    say(f"  history: {', '.join(snapshots)} (0700 root, outside every jail)")


def attack(fleet: Fleet) -> None:
    section("an attack with web1's own key: read back what it pushed")
    key = fleet.root_of("web1") / "etc" / "snap" / "id_ed25519"
    known = fleet.root_of("web1") / "etc" / "snap" / "known_hosts"
    rsh = f"ssh -F /dev/null -i {key} -p {fleet.port} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={known}"
    proc = subprocess.run(["rsync", "-a", "-e", rsh, "snap-web1@127.0.0.1:data/", str(fleet.root / "stolen")],
                          capture_output=True, text=True)  # fmt: skip
    refusal = next((l for l in proc.stderr.splitlines() if "snap-receive" in l), proc.stderr.strip())
    say(f"  rsync snap-web1@backup1:data/ ... -> exit {proc.returncode}: {refusal}")
    if proc.returncode == 0:
        raise SystemExit("the attack was NOT refused")


def _push(fleet: Fleet, minion_id: str) -> dict:
    config = fleet.root_of(minion_id) / "etc" / "snap" / "client.json"
    proc = subprocess.run([fleet.python_of(minion_id), "-m", "snap_core", "--json", "push", "--quiet", "--no-splay",
                           "--config", str(config)], capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"push from {minion_id} failed: {proc.stderr}")
    return json.loads(proc.stdout)


def _recorded_mode(path: pathlib.Path) -> str:
    """The mode history recorded for a file (rsync --fake-super keeps it in an xattr)."""
    try:
        return os.getxattr(path, "user.rsync.%stat", follow_symlinks=False).decode().split()[0][-4:]
    except OSError:
        return oct(os.lstat(path).st_mode & 0o7777)[2:].zfill(4)


def attack_history(fleet: Fleet) -> None:
    section("an attack on history: web1 makes a file setuid root and pushes; older snapshots and db1 are untouched")
    data = fleet.client_data("web1")
    target = next(p for p in sorted(data.rglob("*")) if p.is_file() and not p.is_symlink())
    rel = str(target).lstrip("/")
    history = fleet.root_of("backup1") / "srv" / "snap" / "history"
    before = _recorded_mode(history / "recent.0" / "web1" / rel)
    mode = target.stat().st_mode & 0o7777
    try:
        os.chmod(target, 0o4755)
        for minion_id in fleet.clients:
            _push(fleet, minion_id)
        rot = fleet.salt("snap.rotate", "recent", tgt="backup1")
    finally:
        os.chmod(target, mode)
    now = _recorded_mode(history / "recent.0" / "web1" / rel)
    older = _recorded_mode(history / "recent.1" / "web1" / rel)
    say(f"  web1: chmod 4755 {target.relative_to(data)}, pushed; rotate recent: {rot['result']}; "
        + ", ".join(f"{m} {s['action']}" for m, s in rot["servers"].items()))  # fmt: skip
    say(f"  recent.0 records {now} (what web1 has now); recent.1 still records {older} (was {before})")
    if older != before or rot["servers"].get("db1", {}).get("action") not in ("synced", "unchanged"):
        raise SystemExit("the attack on history was NOT contained")


def archive(fleet: Fleet, moto: Moto, gpg: GnuPG) -> dict:
    section("archive: backup1 packs the history, encrypts it to the offline public key, uploads it under Object Lock")
    public = gpg.gpg("--armor", "--export", gpg.fingerprint).stdout.decode()
    fleet.set_pillar(yaml.safe_dump({"snap": {"archive": {
        "recipients": [public], "target": moto.target(), "pack": {"compressor": "zstd", "level": 3}}}}))  # fmt: skip
    # No snap:archive:chain here: chains are the default for an S3 target.
    failures = state_failures({"backup1": fleet.highstate(tgt="backup1")})
    if failures:
        raise SystemExit(f"highstate of backup1 FAILED: {failures}")
    say(f"  local S3 API (moto) on {moto.endpoint}; backup1 uploads as a put-only identity")
    say(f"  offline key {gpg.fingerprint} (its private half stays off the backup server)")
    say("  incremental (snap:archive:chain, on by default): the first run uploads a base, every later one a link")
    base = _archive_once(fleet, "the base: the whole history")
    # A day later: db1 changes one file, pushes, backup1 rotates; the next archive is a small link.
    data = fleet.client_data("db1")
    (data / "changed-today.conf").write_text("max_connections = 200\n" * 40)
    _push(fleet, "db1")
    fleet.salt("snap.rotate", "recent", tgt="backup1")
    say("  db1 changed one file and pushed; backup1 rotated its history")
    link = _archive_once(fleet, "the next run: a link, only what is new")
    base_bytes = _own_bytes(base["chain"])
    say(
        f"  the link uploaded {human(_own_bytes(link['chain']))}, the base {human(base_bytes)}: "
        f"{_own_bytes(link['chain']) / max(base_bytes, 1):.1%}"
    )
    from botocore.exceptions import ClientError

    s3 = moto.client("putonly")
    piece = base["chain"]["pieces"][0]["key"]
    try:
        s3.delete_object(Bucket=moto.BUCKET, Key=piece)
        raise SystemExit("the delete was NOT refused")
    except ClientError as exc:
        say(f"  delete {piece} as backup1's identity -> {exc.response['Error']['Code']}")
    return link


def _own_bytes(manifest: dict) -> int:
    """What one link uploaded: its own pieces."""
    return sum(p["size"] for p in manifest["pieces"] if p["link"] == manifest["chain"]["link"])


def _archive_once(fleet: Fleet, what: str) -> dict:
    result = fleet.run("snap.archive")
    if not result.get("result") or not result.get("chain"):
        raise SystemExit(f"salt-run snap.archive FAILED: {result}")
    m = result["chain"]
    held = result.get("storage") or {}
    say(f"  salt-run snap.archive -> {what}")
    for k, v in (("chain", f"{m['chain']['id']}, link {m['chain']['link']}"),
                 ("uploaded", f"{human(_own_bytes(m))} in {sum(p['link'] == m['chain']['link'] for p in m['pieces'])} pieces"),
                 ("restorable", f"until {m['chain']['restorable_until']} (COMPLIANCE, every piece read back)"),
                 ("servers", ", ".join(m["servers"])), ("snapshots", ", ".join(s["name"] for s in m["snapshots"])),
                 ("image", f"squashfs, {human(m['image']['size'])}, {m['image']['new_files']} new files, "
                           f"{m['image']['reused_files']} reused"),
                 ("held off-site", f"{human(held.get('bytes_locked'))}, ~{held.get('monthly_usd', 0):.4f} USD/month"),
                 ("manifest", result["manifest_key"])):  # fmt: skip
        say(f"    {k:14} {v}")
    return result


def restore(fleet: Fleet, moto: Moto, gpg: GnuPG, workdir) -> bool:
    section("restore: db1 loses its data; an operator brings it back from off-site with the offline key")
    data = fleet.client_data("db1")
    before = describe(data)
    shutil.rmtree(data)
    say(f"  wiped {data} on db1")
    key = gpg.export_secret(workdir / "offline-secret.asc")
    target = moto.add_read_only_identity()
    dest = workdir / "restored-db1"
    started = time.monotonic()
    matches, diffs = restore_server_and_compare(target, key, "db1", data, dest, expected=before)
    took = time.monotonic() - started
    key.unlink()
    say(f"  snap-backup restore --target <read-only identity> --key offline-secret.asc --server db1 --to {dest}")
    if not matches:
        for path, want, got in diffs[:10]:
            say(f"    DIFFERS {path!r}: had {want}, restored {got}")
        raise SystemExit("the restore of db1 does NOT match what db1 had")
    say(f"  restored db1 from off-site in {took:.1f}s: {len(before)} entries, content, owners, modes, xattrs, ACLs,")
    say("  hardlinks, devices, symlinks and odd names MATCH what db1 had")
    return matches


def status(fleet: Fleet) -> None:
    section("salt-run snap.status")
    ret = fleet.master.salt_run_cli(timeout=120).run("snap.status")
    data = ret.data
    say(table([[r["server"], r["state"], r["schedule"], r["last_good_push"], r["age"], r["missed_slots"],
                r["note"] or ""] for r in data["servers"]],
              ["server", "state", "schedule", "last good push", "age", "missed", "note"]))  # fmt: skip
    arc = data["archive"]
    say(f"  last archive: {arc['last_archive']} ({arc['archive_state']}), retained until {arc['retain_until']}")
    chain = arc.get("chain") or {}
    if "link" in chain:
        say(f"  chain {chain['id']}: link {chain['link']}, {chain['age_days']} days old, "
            f"{chain['dead_ratio']:.0%} dead, the last link uploaded {human(chain['last_link_bytes'])}; "
            f"held under lock {human(arc.get('held_bytes'))}, ~{arc.get('monthly_usd', 0):.2f} USD/month")  # fmt: skip
    say(f"  exit code {ret.returncode} ({'all OK' if data['ok'] else 'something needs attention'})")


def run(keep: bool) -> int:
    root = private_root("snap-demo-")
    started = time.monotonic()
    say(f"snap demo: a throwaway fleet under {root} (127.0.0.1 only)")
    try:
        with loopback.loopback_event_listener() as events:
            manager = FactoriesManager(
                root_dir=root,
                log_server_host="127.0.0.1",
                log_server_port=get_unused_localhost_port(),
                log_server_level="error",
                event_listener=events,
                slow_stop=False,
            )
            formula, pythons = release_on_the_master(root)
            say()
            say("starting salt-master, minions web1, db1, backup1, and backup1's sshd ...")
            fleet = Fleet(manager, root / "fleet", pythons=pythons, file_root=formula)
            with fleet, Moto() as moto, GnuPG() as gpg:
                say(f"  up after {time.monotonic() - started:.0f}s; no module sync: snap's modules come with the wheel")
                deploy(fleet)
                push_and_rotate(fleet)
                attack(fleet)
                attack_history(fleet)
                archive(fleet, moto, gpg)
                restored = restore(fleet, moto, gpg, root)
                status(fleet)
            say()
            say(f"stopped every daemon and removed what the demo made; it took {time.monotonic() - started:.0f}s")
            say("restore of db1 from off-site: " + ("it matches what db1 had" if restored else "MISMATCH"))
        return 0
    finally:
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the fleet's root dir afterwards")
    return run(parser.parse_args(argv).keep)


if __name__ == "__main__":
    sys.exit(main())
