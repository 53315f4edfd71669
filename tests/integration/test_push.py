"""Issue 3 on a real fleet: jailed accounts from the mine, scheduled pushes
over a real sshd, history with real rsnapshot -- and every way a server's
own key might try to reach further than its own jail."""

import contextlib
import fcntl
import grp
import json
import os
import pathlib
import pwd
import shutil
import stat
import subprocess
import time

import pytest

from tests.support import system
from tests.support.fleet import state_changes, state_failures
from tests.support.helpers import run
from tests.support.pushing import (
    PY,
    client_state,
    config_path,
    history_copy,
    home,
    jail,
    jail_busy,
    jail_record,
    push,
    rotate,
    srv,
    tree_state,
)
from tests.support.treegen import describe


@pytest.fixture(scope="module")
def pushed(deployed):
    """Both servers pushed once and the history rotated once."""
    fleet, _ = deployed
    for minion_id in fleet.clients:
        push(fleet, minion_id)
    rec = rotate(fleet)
    assert rec["result"] == "ok", rec
    return fleet


# -- the backup server's accounts ------------------------------------------------


def test_one_jailed_key_only_account_per_server(deployed):
    fleet, _ = deployed
    root = fleet.root_of("backup1")
    for minion_id in fleet.clients:
        account = f"snap-{minion_id}"
        pw = pwd.getpwnam(account)
        jail_home = pathlib.Path(pw.pw_dir)
        assert jail_home == home(fleet, minion_id)
        # The home is root's: the account can write only into incoming.
        assert stat.S_IMODE(jail_home.stat().st_mode) == 0o711 and jail_home.stat().st_uid == 0
        incoming = jail(fleet, minion_id).stat()
        assert stat.S_IMODE(incoming.st_mode) == 0o700 and incoming.st_uid == pw.pw_uid
        assert pw.pw_shell == "/bin/sh" and pw.pw_gecos == f"snap push account of {minion_id}"
        # A uid from the push range, the shared group as its primary group.
        assert 65536 <= pw.pw_uid <= 99999 and grp.getgrgid(pw.pw_gid).gr_name == "snap-push"
        shadow = next(l for l in pathlib.Path("/etc/shadow").read_text().splitlines() if l.startswith(account + ":"))
        assert shadow.split(":")[1] == "*", "no password may log in"
        keyfile = root / "etc" / "snap" / "authorized_keys" / account
        assert keyfile.stat().st_uid == 0 and stat.S_IMODE(keyfile.stat().st_mode) == 0o644
        lines = keyfile.read_text().splitlines()
        assert len(lines) == 1
        receive = root / "usr" / "local" / "lib" / "snap" / "snap-receive"
        config = root / "etc" / "snap" / "server.json"
        assert lines[0].startswith(f'restrict,command="/usr/bin/sudo -n {receive} {config}" ssh-ed25519 ')
    # sudo lets the push group run exactly that, as root, and nothing else.
    rule = fleet.sudoers.read_text()
    assert f"%snap-push ALL=(root) NOPASSWD: {receive} {config}\n" in rule
    assert stat.S_IMODE((srv(fleet) / "history").stat().st_mode) == 0o700
    assert stat.S_IMODE((srv(fleet) / "jails").stat().st_mode) == 0o711


def test_sshd_match_block_hardens_the_accounts(deployed):
    fleet, _ = deployed
    cfg = fleet.root_of("backup1") / "etc" / "ssh" / "sshd_config"
    effective = run(
        "/usr/sbin/sshd", "-T", "-f", str(cfg), "-C", "user=snap-web1,host=localhost,addr=127.0.0.1"
    ).stdout.lower()
    for setting in (
        "permittty no",
        "disableforwarding yes",
        "allowagentforwarding no",
        "allowtcpforwarding no",
        "x11forwarding no",
        "permittunnel no",
        "permituserrc no",
        "passwordauthentication no",
        "authenticationmethods publickey",
        "maxsessions 1",
        "clientaliveinterval 15",
        "clientalivecountmax 4",
        "unusedconnectiontimeout 60",
        "maxstartups 200:30:1000",
    ):
        assert setting in effective, setting
    receive = fleet.root_of("backup1") / "usr" / "local" / "lib" / "snap" / "snap-receive"
    assert f"forcecommand /usr/bin/sudo -n {receive} ".lower() in effective
    others = run("/usr/sbin/sshd", "-T", "-f", str(cfg), "-C", "user=root,host=localhost,addr=127.0.0.1").stdout
    assert "forcecommand none" in others.lower(), "the Match block must not leak to other users"


def test_cron_pushes_at_the_pillar_minute_and_rotates(deployed):
    fleet, _ = deployed
    lines = system.crontab_lines()
    for minion_id in fleet.clients:
        minute = fleet.salt("snap.schedule", tgt=minion_id)["minute"]
        line = next(l for l in lines if f"--config {config_path(fleet, minion_id)}" in l)
        assert line.startswith(f"{minute} 2,10,18 * * * ") and " -m snap_core push --quiet " in line
    rotations = [l for l in lines if " -m snap_core rotate " in l]
    assert len(rotations) == 4
    assert any(l.startswith("0 4,12,20 * * * ") and " rotate recent " in l for l in rotations)


def test_the_backup_server_holds_no_credential_any_server_trusts(deployed):
    fleet, _ = deployed
    backup_root = fleet.root_of("backup1")
    # Every private key on the backup server (its root and root's ~/.ssh).
    private = []
    for base in (backup_root, pathlib.Path("/root/.ssh")):
        for p in base.rglob("*") if base.exists() else []:
            if p.is_file() and not p.is_symlink() and p.stat().st_size < 20000:
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    if "PRIVATE KEY-----" in p.read_text():
                        private.append(p)
    blobs = {run("ssh-keygen", "-yf", str(p)).stdout.split()[1] for p in private}
    assert not (backup_root / "etc" / "snap" / "id_ed25519").exists()
    # Nothing any server of the fleet trusts contains one of them.
    for minion_id in fleet.clients:
        for p in fleet.root_of(minion_id).rglob("*"):
            if p.is_file() and ("authorized_keys" in p.name or p.name.endswith(".pub")):
                text = p.read_text(errors="replace")
                assert not any(b in text for b in blobs), f"{p} trusts a key of the backup server"
    # And the backup server's highstate never touches anyone's authorized keys.
    lowstate = fleet.salt("state.show_lowstate", tgt="backup1")
    assert not [c for c in lowstate if c["state"] == "ssh_auth" or c["fun"] == "keypair"]


# -- the push and the history -------------------------------------------------------


def test_both_servers_history_is_byte_exact_with_metadata(pushed):
    fleet = pushed
    for minion_id in fleet.clients:
        source = describe(fleet.client_data(minion_id))
        kept = describe(history_copy(fleet, minion_id), fake_super=True)
        assert kept == source, minion_id
        kinds = {e["type"] for e in source.values()}
        assert kinds >= {"file", "dir", "symlink", "char", "block", "fifo"}
        assert any(e["owner"] != (0, 0) for e in source.values())
        assert any(e["mode"] == "0o4755" for e in source.values())
    # The jails hold no symlink, device or fifo to follow: only files and dirs.
    for p in (srv(fleet) / "jails").rglob("*"):
        assert p.is_dir() or (p.is_file() and not p.is_symlink()), p


def test_push_records_start_end_bytes_result(pushed):
    fleet = pushed
    _, record, _ = push(fleet, "web1")
    assert record["result"] == "ok" and record["error"] is None
    assert record["started"] <= record["finished"]
    assert record["transfer"]["total_size"] > 3 << 20
    log = (fleet.root_of("web1") / "var" / "lib" / "snap" / "push.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["run_id"] == record["run_id"]
    state = client_state(fleet, "web1")
    assert state["state"] == "done" and state["run_id"] == record["run_id"]
    # What counts is what root recorded: the receiving rsync's own exit status.
    assert jail_record(fleet, "web1")["current_run"] == record["run_id"]


def test_pre_hooks_run_before_the_push_and_land_in_history(pushed):
    fleet = pushed
    hooks = fleet.root_of("db1") / "etc" / "snap" / "hooks.d"
    dump = fleet.client_data("db1") / "dump.sql"
    hook = hooks / "10-dump"
    hook.write_text(f"#!/bin/sh\necho \"-- dump of $SNAP_MINION_ID run $SNAP_RUN_ID\" > {dump}\n")
    hook.chmod(0o755)
    try:
        _, record, _ = push(fleet, "db1")
        assert [h["name"] for h in record["hooks"]] == ["10-dump"] and record["hooks"][0]["exit_code"] == 0
        rotate(fleet)
        kept = (history_copy(fleet, "db1") / "dump.sql").read_text()
        assert kept == f"-- dump of db1 run {record['run_id']}\n"
        # A hook others can write is refused: hooks run as root.
        hook.chmod(0o757)
        code, record, err = push(fleet, "db1", check=False)
        assert code == 2 and "writable only by root" in record["error"]
    finally:
        hook.unlink()
        dump.unlink(missing_ok=True)
        push(fleet, "db1")


def test_an_overlapping_run_skips_and_records_it(pushed):
    fleet = pushed
    lock = fleet.root_of("web1") / "var" / "lib" / "snap" / "push.lock"
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, record, err = push(fleet, "web1", check=False)
    assert code == 3 and record["result"] == "skipped"
    assert "still" in err or "locked" in record["error"]


def test_a_running_or_failed_push_never_becomes_a_snapshot(pushed):
    fleet = pushed
    big = fleet.client_data("web1") / "data" / "new-big.bin"
    slow_cfg = fleet.root / "slow-client.json"
    cfg = json.loads(config_path(fleet, "web1").read_text())
    cfg["bwlimit_kbps"] = 2000  # ~2 MB/s: the push takes several seconds
    slow_cfg.write_text(json.dumps(cfg))
    before = describe(history_copy(fleet, "web1"), fake_super=True)
    big.write_bytes(os.urandom(12 << 20))
    try:
        # 1. A push and a rotation at the same time: the jail is locked, so
        #    rotation keeps web1's previous snapshot.
        proc = subprocess.Popen(
            [PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config", str(slow_cfg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not (jail_busy(fleet, "web1") and jail_record(fleet, "web1").get("in_progress")):
            assert time.monotonic() < deadline, "push never started"
            time.sleep(0.1)
        time.sleep(1)
        rec = rotate(fleet)
        assert proc.poll() is None, "the push finished too early to overlap"
        assert rec["servers"]["web1"]["action"] == "kept", rec["servers"]["web1"]
        assert "still running" in rec["servers"]["web1"]["reason"]
        assert rec["servers"]["db1"]["action"] in ("synced", "unchanged")
        assert describe(history_copy(fleet, "web1"), fake_super=True) == before
        assert proc.wait(60) == 0, proc.stderr.read()
        rec = rotate(fleet)
        assert rec["servers"]["web1"]["action"] == "synced"
        assert (history_copy(fleet, "web1") / "data" / "new-big.bin").stat().st_size == 12 << 20

        # 2. A push killed half way: the jail holds a partial tree, which
        #    root never recorded as complete; rotation keeps the previous snapshot.
        complete = describe(history_copy(fleet, "web1"), fake_super=True)
        big.write_bytes(os.urandom(12 << 20))
        proc = subprocess.Popen(
            [PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config", str(slow_cfg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not (jail_record(fleet, "web1").get("in_progress") and jail_busy(fleet, "web1")):
            assert time.monotonic() < deadline and proc.poll() is None, "the data transfer never started"
            time.sleep(0.1)
        time.sleep(1)
        # The whole session: the push, and the rsync and ssh it runs in groups of their own.
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=True)
        proc.wait()
        # Until the receiving side notices the dropped connection it still
        # holds the jail; rotation would skip web1 as "running" meanwhile.
        deadline = time.monotonic() + 30
        while jail_busy(fleet, "web1"):
            assert time.monotonic() < deadline, "the receiver never let go of the jail"
            time.sleep(0.2)
        assert client_state(fleet, "web1")["state"] == "running", "the client never said done"
        record = jail_record(fleet, "web1")
        receipts = (home(fleet, "web1") / "receipts.jsonl").read_text().splitlines()
        assert record["seq"] > record["current"], ("the broken push is not the current tree", record, receipts[-3:])
        receipt = json.loads(receipts[-1])
        assert receipt["dest"] == "data" and receipt["exit"] not in (0, 24), receipt
        rec = rotate(fleet)
        assert rec["servers"]["web1"]["action"] == "unchanged", rec["servers"]["web1"]
        assert describe(history_copy(fleet, "web1"), fake_super=True) == complete
        # The next run recovers.
        push(fleet, "web1")
        assert rotate(fleet)["servers"]["web1"]["action"] == "synced"
        assert describe(history_copy(fleet, "web1"), fake_super=True) == describe(fleet.client_data("web1"))
    finally:
        big.unlink(missing_ok=True)
        push(fleet, "web1")
        rotate(fleet)


# -- bad input: clear errors, nothing lost ----------------------------------------------


def variant(fleet, minion_id, **changes):
    cfg = json.loads(config_path(fleet, minion_id).read_text())
    cfg.update(changes)
    path = fleet.root / f"{minion_id}-{'-'.join(changes)}.json"
    path.write_text(json.dumps(cfg))
    return path


def test_a_missing_path_is_named_and_nothing_is_sent(pushed):
    fleet = pushed
    cfg = json.loads(config_path(fleet, "web1").read_text())
    before = tree_state(jail(fleet, "web1"))
    code, record, err = push(fleet, "web1", variant(fleet, "web1", paths=cfg["paths"] + ["/srv/typo"]), check=False)
    assert code == 2 and record["result"] == "failed"
    assert "/srv/typo" in err and "nothing was sent" in err
    assert tree_state(jail(fleet, "web1")) == before


def test_backup_server_down_then_back(pushed):
    fleet = pushed
    before = tree_state(jail(fleet, "web1"))
    fleet.sshd.stop()
    try:
        code, record, err = push(fleet, "web1", check=False)
    finally:
        fleet.sshd.start()
    assert code == 1 and record["result"] == "failed" and record["error_kind"] == "NetworkError"
    assert "cannot reach the backup server" in err and record["attempts"] == 2  # 1 retry in the test pillar
    assert tree_state(jail(fleet, "web1")) == before
    _, record, _ = push(fleet, "web1")
    assert record["result"] == "ok"


def test_changed_host_key_is_refused_without_retrying(pushed):
    fleet = pushed
    other = fleet.root / "other_host_key"
    if not other.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    forged = fleet.root / "forged_known_hosts"
    forged.write_text(f"[127.0.0.1]:{fleet.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    before = tree_state(jail(fleet, "web1"))
    code, record, err = push(fleet, "web1", variant(fleet, "web1", known_hosts=str(forged)), check=False)
    assert code == 1 and record["error_kind"] == "Refused" and record["attempts"] == 1
    assert "pinned host key" in err
    assert tree_state(jail(fleet, "web1")) == before


# -- fleet changes: forged keys, collisions, retired servers ---------------------------------


def test_a_forged_mine_key_changes_no_account(pushed):
    fleet = pushed
    keyfile = fleet.root_of("backup1") / "etc" / "snap" / "authorized_keys" / "snap-db1"
    before = keyfile.read_text()
    good = fleet.salt("mine.get", "db1", "snap.pubkey", tgt="backup1")["db1"]
    for forged_line in (f'command="/bin/sh" {good["line"]}', good["line"] + "\n" + good["line"]):
        forged = dict(good, line=forged_line)
        assert fleet.salt("mine.send", "snap.pubkey", json.dumps({"data": forged}),
                          mine_function="test.outputter", tgt="db1") is True  # fmt: skip
        try:
            ret = fleet.highstate(tgt="backup1")
            failed = state_failures({"backup1": ret})
            assert any("snap-account-db1" in f[1] and "gets no push account" in f[2] for f in failed), failed
            assert keyfile.read_text() == before
        finally:
            fleet.salt("mine.update", tgt="db1")
    assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
    push(fleet, "db1")


def test_a_newcomer_sharing_a_short_name_gets_its_own_account(pushed):
    """web1.dc2 arrives while web1 holds snap-web1: it gets snap-web1-dc2 with
    no manual step, learns that name from the backup server's mine, and the
    holder keeps its account; when the holder leaves the fleet its account,
    jail and history stay its own (locked) until purged."""
    fleet = pushed
    intruder = fleet.master.salt_minion_daemon("web1.dc2", overrides={"pillar_mask_output": False})
    keys = fleet.root_of("backup1") / "etc" / "snap" / "authorized_keys"
    before = (keys / "snap-web1").read_text()
    try:
        with intruder.started():
            fleet.salt("saltutil.sync_all", tgt="web1.dc2")
            assert state_failures({"web1.dc2": fleet.salt("state.sls", "snap.keypair", tgt="web1.dc2")}) == []
            fleet.salt("mine.update", tgt="web1.dc2")
            assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
            new = pwd.getpwnam("snap-web1-dc2")
            assert new.pw_gecos == "snap push account of web1.dc2"
            assert 65536 <= new.pw_uid <= 99999 and grp.getgrgid(new.pw_gid).gr_name == "snap-push"
            assert (keys / "snap-web1").read_text() == before, "a newcomer never changes another's account"
            assert "snap:web1.dc2" in (keys / "snap-web1-dc2").read_text()
            # The backup server publishes the name; the newcomer's push goes there.
            assert fleet.salt("snap.my_account", tgt="web1.dc2") == "snap-web1-dc2"
            assert fleet.salt("snap.my_account", tgt="web1") == "snap-web1"
            _, record, _ = push(fleet, "web1")
            assert record["result"] == "ok"
            # The holder leaves the fleet: its account is locked and stays its own.
            fleet.salt("mine.delete", "snap.pubkey", tgt="web1")
            try:
                assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
                assert pwd.getpwnam("snap-web1").pw_gecos == "snap push account of web1"
                assert pwd.getpwnam("snap-web1").pw_shell == "/usr/sbin/nologin"
                assert not (keys / "snap-web1").exists()
                assert pwd.getpwnam("snap-web1-dc2").pw_shell == "/bin/sh"
            finally:
                fleet.salt("mine.update", tgt="web1")
        # The newcomer is gone: forget its key and mine data and purge its account.
        fleet.master.salt_key_cli().run("-d", "web1.dc2", "-y")
        fleet.run("cache.clear_all", tgt="web1.dc2")
        fleet.set_pillar("snap: {server: {purge: [snap-web1-dc2]}}\n")
        assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
        with pytest.raises(KeyError):
            pwd.getpwnam("snap-web1-dc2")
    finally:
        fleet.set_pillar("")
        shutil.rmtree(intruder.config["root_dir"], ignore_errors=True)
    assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
    assert (keys / "snap-web1").read_text() == before
    push(fleet, "web1")


def test_a_server_gone_from_the_mine_is_locked_not_deleted(pushed):
    fleet = pushed
    data_before = tree_state(jail(fleet, "db1"))
    fleet.salt("mine.delete", "snap.pubkey", tgt="db1")
    try:
        ret = fleet.highstate(tgt="backup1")
        retired = ret["snap_|-snap-retired_|-snap-push_|-retired"]
        assert retired["result"] is True
        assert "snap-db1" in retired["changes"]
        assert "data kept" in retired["comment"] and "snap:server:purge" in retired["comment"]
        assert pwd.getpwnam("snap-db1").pw_shell == "/usr/sbin/nologin"
        assert not (fleet.root_of("backup1") / "etc" / "snap" / "authorized_keys" / "snap-db1").exists()
        assert tree_state(jail(fleet, "db1")) == data_before
        code, record, err = push(fleet, "db1", check=False)
        assert code == 1 and record["error_kind"] == "Refused"
        again = fleet.highstate(tgt="backup1")
        assert again["snap_|-snap-retired_|-snap-push_|-retired"]["changes"] == {}
    finally:
        fleet.salt("mine.update", tgt="db1")
    ret = fleet.highstate(tgt="backup1")
    assert state_failures({"backup1": ret}) == []
    assert pwd.getpwnam("snap-db1").pw_shell == "/bin/sh"
    push(fleet, "db1")


def test_highstate_is_idempotent_after_pushes(pushed):
    fleet = pushed
    ret = fleet.highstate()
    assert state_failures(ret) == [] and state_changes(ret) == []
