"""A compromised server against the real backup server (issues 3 and 11).

web1 plays the attacker: root on its own machine with its own snap key, and
-- where a test says so -- code execution as its push account on the backup
server (`setpriv` as that account, what an rsync receiver exploit would
give). Everything it talks to is real: sshd, sudo, snap-receive, rsync 3.5,
rotation with rsnapshot, the btrfs quotas of the jails, the ext4 history.

After every attack db1, the bystander, pushes and rotates as always, and
what history held of it must be exactly as before. The module ends by
printing every attack tried and what it cost the rest of the fleet.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pwd
import shutil
import subprocess
import time

import pytest

from tests.support.fleet import state_failures
from tests.support.pushing import (
    client_state,
    history_copy,
    home,
    jail,
    jail_busy,
    jail_record,
    push,
    rotate,
    rsync_as,
    srv,
    ssh,
    ssh_opts,
    tree_state,
)
from tests.support.treegen import describe

pytestmark = pytest.mark.slow


# -- the ledger and the bystander -------------------------------------------------------


@pytest.fixture(scope="module")
def ledger(request):
    rows: list[tuple[str, str]] = []
    yield rows
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    lines = [f"  {name}: {outcome}" for name, outcome in rows]
    lines.append(
        f"attacks by a compromised server: {len(rows)} tried, {len(rows)} refused or contained; "
        "cost to the rest of the fleet: nothing (after each, db1 pushed and rotated as always "
        "and its history was unchanged)"
    )
    if reporter:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def snapshot_by_rotation(fleet, rotation):
    """The snapshot directory a rotation made, wherever rsnapshot has moved it since."""
    for meta in (srv(fleet) / "history").glob("*/.snapshot.json"):
        if json.loads(meta.read_text())["rotation"] == rotation:
            return meta.parent
    raise AssertionError(f"no snapshot of rotation {rotation} left")


def bystander(fleet):
    """What db1 has on the backup server now."""
    newest = srv(fleet) / "history" / "recent.0"
    return {
        "rotation": json.loads((newest / ".snapshot.json").read_text())["rotation"],
        "history": tree_state(newest / "db1"),
        "jail": jail_record(fleet, "db1"),
    }


@contextlib.contextmanager
def attack(fleet, ledger, name):
    """Play one attack; afterwards db1 must back up as always and its
    history must be untouched. The body sets ``outcome["text"]``."""
    before = bystander(fleet)
    outcome = {"text": "refused"}
    yield outcome
    assert jail_record(fleet, "db1") == before["jail"], f"{name} changed db1's jail"
    _, record, _ = push(fleet, "db1")
    assert record["result"] == "ok", f"after {name}, db1 could not push: {record}"
    rec = rotate(fleet)
    assert rec["servers"]["db1"]["action"] == "synced", (name, rec["servers"]["db1"])
    then = snapshot_by_rotation(fleet, before["rotation"])
    assert tree_state(then / "db1") == before["history"], f"{name} changed db1's history"
    assert describe(history_copy(fleet, "db1"), fake_super=True) == describe(fleet.client_data("db1"))
    ledger.append((name, outcome["text"]))


def refused(proc, *needles):
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    text = proc.stdout + proc.stderr
    assert any(n in text for n in needles), text
    return text


@contextlib.contextmanager
def server_settings(fleet, yaml_text):
    """Backup server pillar for one test (local.sls), applied by highstate; undone after."""
    fleet.set_pillar(yaml_text)
    try:
        assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
        yield
    finally:
        fleet.set_pillar("{}\n")
        assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []


def as_account(fleet, account, *argv, **kw):
    """Run argv as the push account itself (what an rsync receiver exploit gives)."""
    pw = pwd.getpwnam(account)
    return subprocess.run(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--", *argv],
        capture_output=True, text=True, timeout=60, **kw,
    )  # fmt: skip


def qgroup_referenced(subvolume):
    """Bytes the btrfs qgroup of ``subvolume`` counts now."""
    out = subprocess.run(["btrfs", "qgroup", "show", "-rf", "--raw", str(subvolume)], capture_output=True, text=True)
    return next(int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("0/"))


def last_receipt(fleet, minion_id):
    return json.loads((home(fleet, minion_id) / "receipts.jsonl").read_text().splitlines()[-1])


def last_data_receipt(fleet, minion_id):
    lines = (home(fleet, minion_id) / "receipts.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["dest"] == "data"][-1]


@pytest.fixture
def scratch(pushed):
    """A place on web1 for what the attacker sends; web1 back to its real data after."""
    path = pushed.root / "attack"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
    push(pushed, "web1")
    rotate(pushed)


# -- finding 1: a sparse state file that root would read into memory -----------------


def test_a_sparse_gigabyte_state_file_is_never_read(pushed, ledger, scratch):
    fleet = pushed
    state = scratch / ".snap-state"
    with open(state, "wb") as f:
        f.truncate(1 << 30)
    with attack(fleet, ledger, "1 GiB sparse .snap-state") as out:
        proc = rsync_as(fleet, "web1", "-S", str(state), "@H:./")
        assert proc.returncode == 0, proc.stderr  # it may write its own jail
        assert last_receipt(fleet, "web1")["state"] == "unreadable"
        start = time.monotonic()
        rec = rotate(fleet)
        took = time.monotonic() - start
        assert rec["result"] == "ok" and took < 30, (took, rec)
        out["text"] = f"stored in its own jail, read by root: at most 64 KiB; rotation took {took:.1f}s"


# -- finding 2: a push the receiver did not store completely ---------------------------


def test_a_half_stored_push_never_becomes_history(pushed, ledger, scratch):
    fleet = pushed
    big = fleet.client_data("web1") / "too-big.bin"
    big.write_bytes(os.urandom(6 << 20))
    try:
        with server_settings(fleet, "snap:\n  server:\n    limits: {max_file_size: 4194304}\n"):
            with attack(fleet, ledger, "a push the receiver could not store, then 'done'") as out:
                before = describe(history_copy(fleet, "web1"), fake_super=True)
                code, record, err = push(fleet, "web1", check=False)
                data = last_data_receipt(fleet, "web1")
                assert data["exit"] not in (0, 24), (data, err)
                # The client's own word changes nothing: it says done.
                (scratch / ".snap-state").write_text(json.dumps({"state": "done", "run_id": record["run_id"]}))
                assert rsync_as(fleet, "web1", str(scratch / ".snap-state"), "@H:./").returncode == 0
                assert client_state(fleet, "web1")["state"] == "done"
                rec = rotate(fleet)
                assert rec["servers"]["web1"]["action"] == "unchanged", rec["servers"]["web1"]
                assert describe(history_copy(fleet, "web1"), fake_super=True) == before
                out["text"] = f"receiver exit {data['exit']}: not a complete tree, history kept the previous push"
    finally:
        big.unlink(missing_ok=True)


# -- finding 3: filling the backup disk for everyone -----------------------------------


def test_a_quota_stops_one_server_filling_the_disk(pushed, ledger, scratch):
    fleet = pushed
    quota = "snap:\n  server:\n    quota_overrides: {web1: {blocks: 24M}}\n"
    hoard = fleet.client_data("web1") / "hoard"
    try:
        with server_settings(fleet, quota):
            incoming = jail(fleet, "web1")
            assert os.stat(incoming).st_ino == 256, "web1's incoming is a btrfs subvolume now"
            push(fleet, "web1")  # its tree again, under quota
            rotate(fleet)
            hoard.mkdir()
            for i in range(8):
                (hoard / f"blob{i}").write_bytes(os.urandom(4 << 20))
            with attack(fleet, ledger, "fill the backup disk (32 MiB against a 24 MiB quota)") as out:
                code, record, err = push(fleet, "web1", check=False)
                data = last_data_receipt(fleet, "web1")
                assert data["exit"] not in (0, 24), data
                free = shutil.disk_usage(srv(fleet) / "jails").free
                assert free > 512 << 20, free
                assert rotate(fleet)["servers"]["web1"]["action"] == "unchanged"
                out["text"] = (
                    f"EDQUOT at 24 MiB (receiver exit {data['exit']}); the jails filesystem kept {free >> 20} MiB free"
                )
            shutil.rmtree(hoard)
        # An inode bomb: empty files cost only metadata, which counts too
        # (a limit just above what web1 holds keeps this short: every file past
        # the limit costs btrfs a flush before EDQUOT, 20,000 took four minutes).
        rfer = qgroup_referenced(incoming)
        many = fleet.client_data("web1") / "many"
        many.mkdir()
        for i in range(4000):
            (many / f"f{i}").touch()
        try:
            with server_settings(
                fleet, f"snap:\n  server:\n    quota_overrides: {{web1: {{blocks: {rfer + (1 << 20)}}}}}\n"
            ):
                with attack(
                    fleet, ledger, "4,000 empty files against a quota 1 MiB above what web1 holds (an inode bomb)"
                ) as out:
                    push(fleet, "web1", check=False)
                    data = last_data_receipt(fleet, "web1")
                    assert data["exit"] not in (0, 24), data
                    out["text"] = f"metadata counts against the quota: receiver exit {data['exit']}"
        finally:
            shutil.rmtree(many)
        # The override is gone and the default leaves quotas alone: the limit
        # snap set is lifted (one set by hand would stay), and web1 pushes again.
        assert not (home(fleet, "web1") / "quota.json").exists()
        assert b"none" in subprocess.run(["btrfs", "qgroup", "show", "-rf", str(incoming)], capture_output=True).stdout
        push(fleet, "web1")
    finally:
        shutil.rmtree(hoard, ignore_errors=True)


def test_a_file_with_65000_links_breaks_no_rotation(pushed, ledger):
    fleet = pushed
    links = fleet.client_data("web1") / "attack-links"
    links.mkdir()
    try:
        (links / "l0").write_text("one inode, 65000 names\n")
        for i in range(1, 65000):
            os.link(links / "l0", links / f"l{i}")
        with attack(fleet, ledger, "a file with 65,000 hard links (ext4's most)") as out:
            push(fleet, "web1")
            first = rotate(fleet)
            assert first["servers"]["web1"]["action"] == "synced", first["servers"]["web1"]
            again = rotate(fleet)  # carried over: cp -al meets EMLINK, rsync copies it
            assert again["servers"]["web1"]["action"] == "unchanged", again["servers"]["web1"]
            kept = history_copy(fleet, "web1") / "attack-links"
            assert len(list(kept.iterdir())) == 65000
            out["text"] = (
                f"stored; rotation carried it over by copying the inode ({again['servers']['web1']['seconds']:.1f}s), "
                "everyone else rotated"
            )
    finally:
        shutil.rmtree(links)


# -- finding 5 and 6: sparse giants and pushes that never end -----------------------------


def test_a_sparse_16_tib_file_is_cut_off_by_the_wall_clock(pushed, ledger):
    fleet = pushed
    giant = fleet.client_data("web1") / "giant.img"
    with open(giant, "wb") as f:
        f.truncate((16 << 40) - 4096)  # the most ext4 allows
        f.seek(1 << 30)
        f.write(b"data in the middle of nowhere")
    try:
        with server_settings(fleet, "snap:\n  server:\n    limits: {max_seconds: 15}\n"):
            with attack(fleet, ledger, "a 16 TiB sparse file") as out:
                start = time.monotonic()
                push(fleet, "web1", check=False)
                took = time.monotonic() - start
                data = last_data_receipt(fleet, "web1")
                assert data["exit"] not in (0, 24) and "longer than 15s" in data.get("stopped", ""), data
                assert rotate(fleet)["servers"]["web1"]["action"] == "unchanged"
                out["text"] = f"cut off after {took:.0f}s by the receiver's wall clock; never history"
    finally:
        giant.unlink()


def test_a_stalled_push_is_ended_by_the_receiver(pushed, ledger):
    fleet = pushed
    with server_settings(fleet, "snap:\n  server:\n    limits: {io_timeout: 5}\n"):
        with attack(fleet, ledger, "a push that asks --timeout=0 and then never sends") as out:
            argv = ["ssh", *ssh_opts(fleet, "web1"), "snap-web1@127.0.0.1",
                    "rsync --server -lHogDtpAXrSe.iLsfxCIvu --timeout=0 . data/"]  # fmt: skip
            stall = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 10
                while not jail_busy(fleet, "web1"):
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                start = time.monotonic()
                rec = rotate(fleet)  # does not wait for the stalled jail
                assert rec["servers"]["web1"]["action"] == "kept", rec
                assert rec["servers"]["web1"]["seconds"] < 2 + 5, rec  # lock_wait is 2s in the test pillar
                stall.wait(30)
                waited = time.monotonic() - start
            finally:
                stall.kill()
                stall.communicate()
            assert not jail_busy(fleet, "web1")
            out["text"] = f"the receiver's own 5s timeout ended it ({waited:.0f}s); rotation did not wait for it"


def test_a_flood_of_connections_gets_one_transfer(pushed, ledger):
    fleet = pushed
    with attack(fleet, ledger, "30 simultaneous transfers into one jail") as out:
        cmd = "rsync --server -e.LsfxCIvu . ./"
        procs = [
            subprocess.Popen(
                ["ssh", *ssh_opts(fleet, "web1"), "snap-web1@127.0.0.1", cmd],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for _ in range(30)
        ]
        # Every session but the one holding the jail ends by itself, refused.
        deadline = time.monotonic() + 60
        while sum(p.poll() is None for p in procs) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        held = sum(p.poll() is None for p in procs)
        outs = []
        for p in procs:
            p.kill()
            outs.append(p.communicate()[1].decode(errors="replace"))
        busy = sum("busy" in o for o in outs)
        dropped = sum(any(m in o for m in ("kex_exchange", "Connection closed", "reset by peer")) for o in outs)
        # The account's own process cap (RLIMIT_NPROC of snap-receive): with
        # thirty sessions of one account alive, the one that got the jail may
        # not start its rsync either. The flood only costs the flooder.
        capped = sum("Resource temporarily unavailable" in o and "busy" not in o for o in outs)
        assert held <= 1 and busy + dropped + capped >= len(procs) - 1, outs
        out["text"] = (f"{busy} refused as busy, {dropped} dropped by sshd before login, "
                       f"{capped} stopped by the account's process cap, {held} held the jail")  # fmt: skip


# -- finding 7: write-only must not leak -------------------------------------------------


def test_write_only_leaks_nothing_back(pushed, ledger, scratch):
    fleet = pushed
    # Names only web1's tree has (config.ini, big.bin, hard1, loop9, ...).
    names = {p.name for p in fleet.client_data("web1").rglob("*") if any(c.isdigit() for c in p.name) or "." in p.name}
    assert len(names) >= 5, names
    empty = scratch / "empty"
    empty.mkdir()
    with attack(fleet, ledger, "rsync -rv --delete of an empty tree (list what was pushed)") as out:
        proc = rsync_as(fleet, "web1", "-rv", "--delete", f"{empty}/", "@H:data/")
        text = refused(proc, "not allowed")
        assert not any(n in text for n in names), [n for n in names if n in text]
        out["text"] = "refused before any listing; no pushed name came back"
    with attack(fleet, ledger, "a merge filter naming a pushed file (guess its lines)") as out:
        proc = rsync_as(fleet, "web1", "-r", "--delete", "--filter=dir-merge /srv/.snap-state", f"{empty}/", "@H:data/")
        refused(proc, "not allowed")
        proc = rsync_as(fleet, "web1", "-rm", "--filter=- /etc/*", f"{empty}/", "@H:data/")
        refused(proc, "not allowed")
        out["text"] = "no --delete, no -m: the receiver never reads a filter list"
    with attack(fleet, ledger, "delta transfer against a stored file (its block checksums)") as out:
        probe = fleet.client_data("web1") / "probe.bin"
        probe.write_bytes(os.urandom(5 << 20))
        try:
            push(fleet, "web1")
            with open(probe, "r+b") as f:
                f.seek(100)
                f.write(b"X")
            os.utime(probe, (1, 1))
            _, record, _ = push(fleet, "web1")
            got, sent = record["transfer"]["bytes_received"], record["transfer"]["bytes_sent"]
            assert sent > 5 << 20 and got < 2000, record["transfer"]
            out["text"] = f"--whole-file is forced: {sent >> 20} MiB sent, {got} bytes came back, no checksums"
        finally:
            probe.unlink()
    with attack(fleet, ledger, "-c, -u, --existing, --ignore-existing: compare with what is stored") as out:
        for flag in ("-c", "-u", "--ignore-existing", "--existing"):
            refused(rsync_as(fleet, "web1", "-r", flag, f"{empty}/", "@H:data/"), "not allowed")
        out["text"] = "refused: the receiver compares nothing but size and time against the previous tree"


# -- finding 8: code execution as the account ------------------------------------------------


def test_code_execution_as_the_account_reaches_nothing(pushed, ledger, scratch):
    fleet = pushed
    acct = "snap-web1"
    h = home(fleet, "web1")
    db1_incoming = jail(fleet, "db1")
    with attack(fleet, ledger, "as snap-web1: forge receipts, jail.json, the lock") as out:
        for name in ("receipts.jsonl", "jail.json", "lock", "new-file"):
            proc = as_account(fleet, acct, "sh", "-c", f"echo forged >> {h / name}")
            assert proc.returncode != 0 and "Permission denied" in proc.stderr, (name, proc)
        out["text"] = "Permission denied: the home and its records are root's"
    with attack(fleet, ledger, "as snap-web1: swap incoming for a link into db1's jail") as out:
        proc = as_account(fleet, acct, "mv", str(h / "incoming"), str(h / "moved"))
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc
        out["text"] = "Permission denied: incoming cannot be renamed or replaced"
    with attack(fleet, ledger, "as snap-web1: its newest tree swapped for links to db1 and /etc") as out:
        results = []
        for target in (db1_incoming, pathlib.Path("/etc")):
            # A new complete push, then the swap before rotation reads it.
            (fleet.client_data("web1") / "fresh.txt").write_text(f"{time.time()}\n")
            push(fleet, "web1")
            current = jail(fleet, "web1") / f"tree.{jail_record(fleet, 'web1')['current']}"
            assert as_account(fleet, acct, "mv", str(current), str(current) + ".real").returncode == 0
            assert as_account(fleet, acct, "ln", "-s", str(target), str(current)).returncode == 0
            before = describe(history_copy(fleet, "web1"), fake_super=True)
            web1 = rotate(fleet)["servers"]["web1"]
            assert web1["action"] == "failed", web1
            assert describe(history_copy(fleet, "web1"), fake_super=True) == before
            assert not list((srv(fleet) / "history" / "recent.0" / "web1").rglob("passwd"))
            assert as_account(fleet, acct, "rm", str(current)).returncode == 0
            assert as_account(fleet, acct, "mv", str(current) + ".real", str(current)).returncode == 0
            results.append(web1["reason"].split(": ")[-1][:60])
        (fleet.client_data("web1") / "fresh.txt").unlink()
        out["text"] = "rotation reads the jail as snap-web1, confined to its incoming: " + "; ".join(results)
    with attack(fleet, ledger, "as snap-web1: sudo anything else") as out:
        proc = as_account(fleet, acct, "sudo", "-n", "/bin/sh", "-c", "id")
        assert proc.returncode != 0, proc
        env = dict(os.environ, SSH_ORIGINAL_COMMAND="rsync --server --sender -logDtpre.iLsfxCIvu . /")
        receive = fleet.root_of("backup1") / "usr" / "local" / "lib" / "snap" / "snap-receive"
        config = fleet.root_of("backup1") / "etc" / "snap" / "server.json"
        proc = as_account(fleet, acct, "sudo", "-n", str(receive), str(config), env=env)
        assert proc.returncode != 0 and "can only write" in proc.stderr, proc
        out["text"] = "sudo allows only snap-receive, which still only receives into web1's own jail"


# -- finding 9: rewriting the metadata of history ----------------------------------------------


def test_no_push_changes_what_an_older_snapshot_recorded(pushed, ledger):
    fleet = pushed
    target = next(
        p for p in fleet.client_data("web1").rglob("*") if p.is_file() and not p.is_symlink() and p.lstat().st_uid
    )
    rel = target.relative_to(fleet.client_data("web1"))
    mode = target.stat().st_mode
    push(fleet, "web1")
    rotate(fleet)
    old = history_copy(fleet, "web1") / rel
    recorded = (os.lstat(old).st_ino, os.getxattr(old, "user.rsync.%stat", follow_symlinks=False),
                sorted(os.listxattr(old, follow_symlinks=False)))  # fmt: skip
    try:
        with attack(fleet, ledger, "chmod 4755 and a planted xattr on an unchanged file") as out:
            os.chmod(target, 0o4755)
            os.setxattr(target, "user.planted", b"backdoor")
            push(fleet, "web1")
            rotate(fleet)
            was = history_copy(fleet, "web1", "recent.1") / rel
            now = history_copy(fleet, "web1") / rel
            assert (os.lstat(was).st_ino, os.getxattr(was, "user.rsync.%stat", follow_symlinks=False),
                    sorted(os.listxattr(was, follow_symlinks=False))) == recorded  # fmt: skip
            assert os.lstat(now).st_ino != recorded[0]
            assert b"4755" in os.getxattr(now, "user.rsync.%stat", follow_symlinks=False)
            out["text"] = "the new snapshot has it, the older one is as it was (another inode)"
    finally:
        os.chmod(target, mode & 0o7777)
        os.removexattr(target, "user.planted")


# -- more that a hostile client might try -----------------------------------------------------


def test_option_smuggling_is_refused(pushed, ledger, scratch):
    fleet = pushed
    history = srv(fleet) / "history"
    smuggled = {
        "--temp-dir=/tmp": "not allowed",
        "--partial-dir=../../x": "not allowed",
        f"--compare-dest={history}/recent.0/db1": "not allowed",
        f"--copy-dest={history}/recent.0": "not allowed",
        "--write-batch=/tmp/batch": "not allowed",
        "--max-alloc=0": "not allowed",
        "--chown=0:0": "not allowed",
        "--iconv=utf8,latin1": "not allowed",
        "--super": "not allowed",
        "--info=ALL": "not allowed",
        "--debug=FILTER": "not allowed",
        "--daemon": "not allowed",
    }
    with attack(fleet, ledger, f"{len(smuggled)} options smuggled to the receiver") as out:
        for opt, needle in smuggled.items():
            refused(rsync_as(fleet, "web1", "-r", f"--remote-option={opt}", f"{scratch}/", "@H:data/"), needle)
        proc = ssh(fleet, "web1", command="rsync --server --daemon --config=/etc/shadow .")
        refused(proc, "not allowed", "unexpected")
        out["text"] = "every one refused by name before rsync ran"


def test_odd_names_and_xattrs_are_kept_and_harm_nobody(pushed, ledger):
    fleet = pushed
    odd = fleet.client_data("web1") / "odd"
    odd.mkdir()
    try:
        for name in (b"new\nline", b"tab\there", b"back\\slash", b"-leading-dash", b"\xff\xfe not utf-8",
                     b"x" * 255, b"..dots..", b" space "):  # fmt: skip
            (odd / os.fsdecode(name)).write_bytes(name)
        bomb = odd / "xattr-bomb"
        bomb.write_text("many attributes")
        stored = 0
        for i in range(400):
            try:
                os.setxattr(bomb, f"user.a{i:04d}", os.urandom(64))
                stored += 1
            except OSError:
                break
        for i in range(max(0, stored - 4), stored):  # room for the fake-super attribute in history
            os.removexattr(bomb, f"user.a{i:04d}")
        stored = max(0, stored - 4)
        with attack(fleet, ledger, f"odd names and a file with {stored} xattrs") as out:
            push(fleet, "web1")
            assert rotate(fleet)["servers"]["web1"]["action"] == "synced"
            kept = history_copy(fleet, "web1") / "odd"
            assert describe(kept, fake_super=True) == describe(odd)
            out["text"] = "stored exactly as sent, in web1's own history"
    finally:
        shutil.rmtree(odd)


def test_the_attacker_is_still_refused_the_old_ways(pushed, ledger, scratch):
    """The 18 attacks of issue 3 with web1's real key, against the new receiver."""
    fleet = pushed
    db1_in = jail(fleet, "db1")
    history = srv(fleet) / "history"
    marker = fleet.root / "pwned"
    evil = fleet.root / "evil-src"
    evil.mkdir(exist_ok=True)
    (evil / "evil.txt").write_text("evil\n")
    readback = fleet.root / "readback"
    attacks = {
        "interactive shell": lambda: refused(ssh(fleet, "web1", "-tt"), "PTY allocation request failed", "snap-receive"),
        "arbitrary command": lambda: refused(ssh(fleet, "web1", command=f"id; touch {marker}"), "only receive pushes"),
        "scp upload": lambda: refused(
            subprocess.run(["scp", "-O", *scp_opts(fleet), str(evil / "evil.txt"), "snap-web1@127.0.0.1:/tmp/"],
                           capture_output=True, text=True, timeout=30),
            "only receive pushes",
        ),
        "sftp session": lambda: refused(
            subprocess.run(["sftp", "-b", "-", *scp_opts(fleet), "snap-web1@127.0.0.1"], input="ls\n",
                           capture_output=True, text=True, timeout=30),
            "only receive pushes", "Connection closed", "Received message too long",
        ),
        "read its own pushed data": lambda: refused(rsync_as(fleet, "web1", "-a", "@H:data/", str(readback)), "can only write"),
        "read another server's jail": lambda: refused(
            rsync_as(fleet, "web1", "-a", f"@H:{db1_in}/", str(readback)), "can only write"
        ),
        "read the history": lambda: refused(rsync_as(fleet, "web1", "-a", f"@H:{history}/", str(readback)), "can only write"),
        "write with ../": lambda: refused(rsync_as(fleet, "web1", "-a", str(evil / "evil.txt"), "@H:../"), "not allowed"),
        "write into another jail by absolute path": lambda: refused(
            rsync_as(fleet, "web1", "-a", str(evil / "evil.txt"), f"@H:{db1_in}/"), "not allowed"
        ),
        "write into the history": lambda: refused(
            rsync_as(fleet, "web1", "-a", str(evil / "evil.txt"), f"@H:{history}/recent.0/"), "not allowed"
        ),
        "--delete against another jail": lambda: refused(
            rsync_as(fleet, "web1", "-a", "--delete", f"{evil}/", "@H:data/../../../snap-db1/incoming/"), "not allowed"
        ),
        "--link-dest into the history": lambda: refused(
            rsync_as(fleet, "web1", "-a", f"--remote-option=--link-dest={history}/recent.0", f"{evil}/", "@H:data/"),
            "not allowed",
        ),
        "--log-file outside the jail": lambda: refused(
            rsync_as(fleet, "web1", "-a", f"--remote-option=--log-file={marker}", f"{evil}/", "@H:data/"), "not allowed"
        ),
        "another server's key for this account": lambda: refused(
            ssh(fleet, "db1", account="snap-web1", command="rsync --server -e.LsfxCIvu . ./"), "Permission denied"
        ),
        "local port forwarding": lambda: refused(
            subprocess.run(["ssh", *ssh_opts(fleet, "web1"), "-N", "-o", "ExitOnForwardFailure=yes",
                            "-W", f"127.0.0.1:{fleet.port}", "snap-web1@127.0.0.1"],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL),
            "administratively prohibited", "open failed",
        ),
        "remote port forwarding": lambda: refused(
            subprocess.run(["ssh", *ssh_opts(fleet, "web1"), "-N", "-o", "ExitOnForwardFailure=yes",
                            "-R", "127.0.0.1:0:127.0.0.1:22", "snap-web1@127.0.0.1"],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL),
            "remote port forwarding failed", "forwarding failed",
        ),
        "agent forwarding": lambda: agent_forwarding(fleet),
        "a symlink pushed, then written through": lambda: symlink_trick(fleet, evil, db1_in),
    }  # fmt: skip
    with attack(fleet, ledger, f"the {len(attacks)} attacks of issue 3") as out:
        protected = {"db1 jail": home(fleet, "db1"), "history": history}
        for name, play in attacks.items():
            before = {k: tree_state(v) for k, v in protected.items()}
            play()
            assert {k: tree_state(v) for k, v in protected.items()} == before, f"{name} changed something"
        shutil.rmtree(readback, ignore_errors=True)
        assert not marker.exists()
        out["text"] = f"all {len(attacks)} refused, nothing outside web1's own jail changed"
    assert len(attacks) == 18


def symlink_trick(fleet, evil, db1_in):
    link = evil / "escape"
    link.unlink(missing_ok=True)
    os.symlink(str(db1_in), link)
    rsync_as(fleet, "web1", "-a", "--remote-option=--fake-super", f"{evil}/", "@H:data/")
    rsync_as(fleet, "web1", "-a", "--remote-option=--fake-super", str(evil / "evil.txt"), "@H:data/escape/")
    assert not any(p.is_symlink() for p in jail(fleet, "web1").rglob("*")), "a symlink exists in the jail"


def agent_forwarding(fleet):
    env = dict(os.environ)
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    for part in agent.split(";"):
        if "=" in part:
            k, v = part.strip().split("=", 1)
            env[k] = v
    uid = pwd.getpwnam("snap-web1").pw_uid
    try:
        proc = subprocess.Popen(
            ["ssh", *ssh_opts(fleet, "web1"), "-A", "-o", "ForwardAgent=yes", "snap-web1@127.0.0.1",
             "rsync --server -e.LsfxCIvu . ./"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        time.sleep(2)  # the session is up: the receiver waits for rsync's protocol
        sockets = [p for p in pathlib.Path("/tmp").glob("ssh-*") if p.stat().st_uid == uid]
        proc.kill()
        proc.communicate()
        assert sockets == [], f"sshd forwarded the agent: {sockets}"
    finally:
        subprocess.run(["ssh-agent", "-k"], env=env, capture_output=True)


def scp_opts(fleet):
    opts = ssh_opts(fleet, "web1")
    i = opts.index("-p")
    return opts[:i] + ["-P", opts[i + 1]] + opts[i + 2 :]


# -- more: an estimate that lies ----------------------------------------------------------------


def test_a_push_that_costs_more_than_its_receipts_say_never_eats_the_reserve(pushed, ledger):
    # Only attributes change: the receiver copies each file locally in the jail
    # (nothing "sent", receipts say ~0 bytes), but in history every such file is
    # a new inode with all its data. Rotation's estimate says it fits; the copy
    # would eat the reserve that every other server's new data needs.
    fleet = pushed
    ballast = fleet.client_data("web1") / "ballast"
    ballast.mkdir()
    for i in range(4):
        (ballast / f"b{i}").write_bytes(os.urandom(8 << 20))
    try:
        push(fleet, "web1")
        assert rotate(fleet)["servers"]["web1"]["action"] == "synced"
        free = shutil.disk_usage(srv(fleet) / "history").free
        room = 16 << 20  # free above the reserve: less than the 32 MiB the attack costs
        reserve = f"snap:\n  server:\n    reserve: {{min_free_bytes: {free - room}, min_free_percent: 0}}\n"
        with server_settings(fleet, reserve):
            with attack(fleet, ledger, "chmod of 32 MiB of files (receipts: 0 bytes) against 16 MiB of room") as out:
                for f in ballast.iterdir():
                    os.chmod(f, 0o600)
                push(fleet, "web1")
                data = last_data_receipt(fleet, "web1")
                assert data["bytes"] < 1 << 20, data
                rec = rotate(fleet)
                web1 = rec["servers"]["web1"]
                left = shutil.disk_usage(srv(fleet) / "history").free
                print("attack: attribute-only change;", web1, "free", left, "reserve", free - room)
                assert web1["action"] == "refused" and "receipts said" in web1["reason"], web1
                assert left >= free - room - (4 << 20), "the reserve is kept (the carried-over directories aside)"
                out["text"] = f"receipts said {data['bytes']} bytes; the copy took 32 MiB: discarded, web1 refused"
    finally:
        shutil.rmtree(ballast)
        push(fleet, "web1")
        rotate(fleet)
