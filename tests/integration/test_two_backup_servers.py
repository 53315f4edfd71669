"""Issue 14: two backup servers in one real Salt fleet.

backup2 (a real minion with its own real sshd on another loopback port, its
jails on btrfs and its history on ext4 like backup1's) joins the test fleet
and pillar lists both backup servers, with web1 assigned to backup2 and db1
to backup1. On the next highstates web1 moves: backup2 makes its account,
web1 pins backup2's host key and pushes there, backup1 locks web1's old
account and keeps the history it holds. The fleet-wide views (`salt-run
snap.status`, `snap.restore`) see both backup servers and say where each
part of web1's history lives.

On one machine the two backup servers share /etc/passwd, as two real ones
never would: backup2 gets a push group, uid range, account name for web1
and sudoers file of its own so neither touches the other's accounts.
Everything returns to one backup server afterwards.
"""

import contextlib
import json
import pathlib
import subprocess
import time

import pytest
from pytestshellutils.utils.ports import get_unused_localhost_port

from tests.support import loopfs, system
from tests.support.fleet import MINION_OVERRIDES, state_failures
from tests.support.pushing import PY, config_path, push, rotate

PILLAR = """
snap:
  backup_servers:
    backup1: {host: 127.0.0.1, port: @PORT1@}
    backup2: {host: 127.0.0.1, port: @PORT2@}
  assignment: {web1: backup2, db1: backup1}
{%- if grains["id"] == "backup2" %}
  server:
    group: snap-push2
    gid: 200777
    uid_range: [200800, 200899]
    account_overrides: {web1: snap2-web1}
    sudoers: @SUDOERS2@
{%- endif %}
"""


def wait_jail_free(home: pathlib.Path, timeout=30):
    """Until backup2's receiver lets go of the jail (its receipt comes last)."""
    import fcntl
    import os

    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(home / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            assert time.monotonic() < deadline, f"the receiver never let go of {home}"
            time.sleep(0.1)
        finally:
            os.close(fd)


@pytest.fixture(scope="module")
def two(pushed):
    """The fleet with backup2 added and web1 moved to it; afterwards web1
    goes back to backup1 and backup2 is gone (minion, key, mine, accounts,
    mounts, sudoers file)."""
    fleet = pushed
    port2 = get_unused_localhost_port()
    sudoers2 = pathlib.Path(f"/etc/sudoers.d/snap-test-{fleet.port}-backup2")
    pillar = (
        PILLAR.replace("@PORT1@", str(fleet.port)).replace("@PORT2@", str(port2)).replace("@SUDOERS2@", str(sudoers2))
    )
    users_before = system.users()
    with contextlib.ExitStack() as stack:
        stack.callback(sudoers2.unlink, missing_ok=True)
        minion = fleet.master.salt_minion_daemon("backup2", overrides=MINION_OVERRIDES)
        stack.enter_context(minion.started())
        fleet.minions["backup2"] = minion
        root2 = fleet.root_of("backup2")
        base = root2 / "srv" / "snap"
        stack.enter_context(loopfs.mounted("btrfs", base / "jails", "1G"))
        stack.enter_context(loopfs.mounted("ext4", base / "history", "1G"))
        sshd2 = stack.enter_context(system.Sshd(root2, port2))

        @stack.callback
        def back_to_one():
            # Runs first: web1 back to backup1 (its locked account there comes
            # back), backup2 forgotten before its minion stops.
            fleet.set_pillar("")
            fleet.salt("mine.flush", tgt="backup2")
            fleet.salt("mine.update", tgt="web1")
            assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
            fleet.salt("mine.update", tgt="backup1")
            assert state_failures({"web1": fleet.highstate(tgt="web1")}) == []
            fleet.sshd.reload()

        fleet.salt("saltutil.sync_all", tgt="backup2")
        fleet.set_pillar(pillar)
        runs = {"backup2": fleet.highstate(tgt="backup2")}
        fleet.salt("mine.update", tgt="backup2")
        sshd2.reload()
        runs["web1"] = fleet.highstate(tgt="web1")
        fleet.salt("mine.update", tgt="web1")
        runs["backup1"] = fleet.highstate(tgt="backup1")
        runs["db1"] = fleet.highstate(tgt="db1")
        try:
            yield {"fleet": fleet, "runs": runs, "port2": port2, "root2": root2, "sshd2": sshd2}
        finally:
            stack.close()
            fleet.run("cache.clear_all", tgt="backup2")
            fleet.master.salt_key_cli().run("-d", "backup2", "-y")
            fleet.minions.pop("backup2", None)
            for name in sorted(system.users() - users_before):
                subprocess.run(["userdel", "-f", name], capture_output=True)
            subprocess.run(["groupdel", "snap-push2"], capture_output=True)


def test_a_server_assigned_to_the_new_backup_server_moves_and_pushes_there(two):
    fleet, root2 = two["fleet"], two["root2"]
    assert state_failures(two["runs"]) == [], state_failures(two["runs"])
    # The pillar the master compiles (what the client's config says): web1's
    # push target is backup2, db1's stays backup1.
    db1 = json.loads(config_path(fleet, "db1").read_text())
    assert (db1["server_port"], db1["account"]) == (fleet.port, "snap-db1"), db1
    # backup2 made web1's account (its own group and name) and publishes it.
    assert fleet.salt("snap.my_account", tgt="web1") == "snap2-web1"
    cfg = json.loads(config_path(fleet, "web1").read_text())
    assert (cfg["server_port"], cfg["account"]) == (two["port2"], "snap2-web1"), cfg
    # web1 pinned backup2's host key, not backup1's.
    known = (fleet.root_of("web1") / "etc" / "snap" / "known_hosts").read_text()
    host2 = (root2 / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    host1 = (fleet.root_of("backup1") / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    assert host2 in known and host1 not in known
    # backup1 locked web1's old account and dropped it from its server.json.
    server1 = json.loads((fleet.root_of("backup1") / "etc" / "snap" / "server.json").read_text())
    assert "web1" not in server1["accounts"].values() and "db1" in server1["accounts"].values()
    # The push lands on backup2, and backup2's rotation takes it into its history.
    proc = subprocess.run([PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config",
                           str(config_path(fleet, "web1"))], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    wait_jail_free(root2 / "srv" / "snap" / "jails" / "snap2-web1")
    cfg2 = root2 / "etc" / "snap" / "server.json"
    out = subprocess.run([PY, "-m", "snap_core", "--json", "rotate", "recent", "--config", str(cfg2)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["servers"]["web1"]["action"] == "synced"
    data = str(fleet.client_data("web1")).lstrip("/")
    assert (root2 / "srv" / "snap" / "history" / "recent.0" / "web1" / data).is_dir()
    # db1 still pushes to backup1, and backup1 rotates without web1.
    assert push(fleet, "db1")[0] == 0
    rec = rotate(fleet)
    assert rec["result"] == "ok" and "web1" not in rec["servers"], rec


def test_status_shows_both_backup_servers_and_where_older_history_lives(two):
    fleet = two["fleet"]
    table = fleet.master.salt_run_cli(timeout=180).run("snap.status").data
    assert table["backup_servers"] == ["backup1", "backup2"], table
    rows = {r["server"]: r for r in table["servers"]}
    assert set(rows) == {"web1", "db1"}, rows
    assert rows["web1"]["backup_server"] == "backup2" and rows["web1"]["state"] == "OK", rows["web1"]
    assert rows["db1"]["backup_server"] == "backup1" and rows["db1"]["state"] == "OK", rows["db1"]
    # web1's history from before the move is still on backup1, and status says so.
    # Confirmed: web1's own push records name backup1 (its host:port), and
    # the master recorded the assignment (the ext_pillar) since the move.
    assert rows["web1"]["older_history"].startswith("backup1 (newest "), rows["web1"]
    assert "its word only" not in rows["web1"]["older_history"], rows["web1"]
    assert [a["backup_server"] for a in table["archives"]] == ["backup1", "backup2"]
    # snap.fleet: each server's backup server, and the account name that one gives it.
    report = fleet.run("snap.fleet")
    assert (report["web1"]["backup_server"], report["web1"]["account_published"]) == ("backup2", "snap2-web1"), report
    assert (report["db1"]["backup_server"], report["db1"]["account_published"]) == ("backup1", "snap-db1"), report
    # One backup server alone: only its own servers.
    one = fleet.master.salt_run_cli(timeout=180).run("snap.status", "tgt=backup2", "offsite=False").data
    assert [r["server"] for r in one["servers"]] == ["web1"], one
    print(f"\nstatus over two backup servers: {[(r['server'], r['backup_server'], r['state']) for r in rows.values()]}; "
          f"web1's older history: {rows['web1']['older_history']}")  # fmt: skip


def test_restore_reads_the_new_backup_server_or_the_old_one_by_name(two, tmp_path):
    fleet = two["fleet"]
    etc = fleet.client_data("web1") / "etc"
    name = sorted(p.name for p in etc.iterdir() if p.is_file())[0]
    for backup in ("backup2", "backup1"):
        dest = tmp_path / backup
        ret = fleet.run("snap.restore", "web1", str(etc / name), f"to={dest}", f"backup={backup}")
        assert ret["result"] is True and ret["files"] == 1, ret
        assert (dest / str(etc).lstrip("/") / name).read_bytes() == (etc / name).read_bytes()
    # By default, the one web1 is assigned to.
    dest = tmp_path / "default"
    assert fleet.run("snap.restore", "web1", str(etc / name), f"to={dest}")["result"] is True
    bad = fleet.master.salt_run_cli(timeout=120).run("snap.restore", "web1", str(etc), "backup=db1")
    # (salt-run reports invalid arguments with exit code 0: the message is the refusal.)
    assert "'db1' is not a backup server" in (bad.stdout + bad.stderr) and bad.data is None, bad


def test_the_drill_minion_audits_every_backup_servers_prefix(two):
    fleet = two["fleet"]
    fleet.set_pillar(
        (fleet.pillar_root / "local.sls").read_text()
        + "  verify:\n    minion: db1\n    target: {bucket: audit-only}\n",
        tgt="db1",
    )
    try:
        low = fleet.salt("state.show_sls", "snap.verify", tgt="db1")
        assert isinstance(low, dict), low
        prefixes = {
            sid: next(a["dataset"]["prefix"] for a in body["file"] if isinstance(a, dict) and "dataset" in a)
            for sid, body in low.items()
            if sid.startswith("snap-verify-config")
        }
        assert prefixes == {
            "snap-verify-config-backup1": "snap/backup1/",
            "snap-verify-config-backup2": "snap/backup2/",
        }
        crons = sorted(sid for sid in low if sid.startswith("snap-verify-audit-cron"))
        assert crons == ["snap-verify-audit-cron-backup1", "snap-verify-audit-cron-backup2"], sorted(low)
    finally:
        fleet.set_pillar((fleet.pillar_root / "local.sls").read_text().split("  verify:\n")[0], tgt="db1")
