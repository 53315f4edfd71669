"""Driving a test fleet's pushes the way cron does, and looking into the
backup server's jails and history (tests/integration)."""

import fcntl
import json
import os
import pathlib
import subprocess
import sys
import time

from tests.support.helpers import run

PY = sys.executable


def config_path(fleet, minion_id):
    return fleet.root_of(minion_id) / "etc" / "snap" / "client.json"


def push(fleet, minion_id, config=None, check=True):
    """Run the push exactly as cron does; returns (exit code, record, stderr),
    once the backup server has finished recording it."""
    config = config or config_path(fleet, minion_id)
    proc = subprocess.run(
        [PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    state_dir = json.loads(pathlib.Path(config).read_text())["state_dir"]
    record = json.loads((pathlib.Path(state_dir) / "push-last.json").read_text())
    wait_idle(fleet, minion_id)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.returncode, record, proc.stderr


def rotate(fleet, level="recent"):
    cfg = fleet.root_of("backup1") / "etc" / "snap" / "server.json"
    proc = run(PY, "-m", "snap_core", "--json", "rotate", level, "--config", str(cfg), check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def srv(fleet):
    return fleet.root_of("backup1") / "srv" / "snap"


def home(fleet, minion_id):
    """The jail's home: root's (lock, receipts, jail.json)."""
    return srv(fleet) / "jails" / f"snap-{minion_id}"


def jail(fleet, minion_id):
    """Where the account can write: its incoming directory."""
    return home(fleet, minion_id) / "incoming"


def client_state(fleet, minion_id):
    """What the client's state file in the jail says (its word)."""
    return json.loads((jail(fleet, minion_id) / "state" / ".snap-state").read_text())


def jail_record(fleet, minion_id):
    """What snap-receive (root) recorded: the newest complete tree."""
    return json.loads((home(fleet, minion_id) / "jail.json").read_text())


def wait_idle(fleet, minion_id, timeout=30):
    """Until the receiver has let go of the jail (it writes its receipt after
    the client has gone)."""
    deadline = time.monotonic() + timeout
    while jail_busy(fleet, minion_id):
        assert time.monotonic() < deadline, f"the receiver never let go of {minion_id}'s jail"
        time.sleep(0.1)


def jail_busy(fleet, minion_id):
    """Whether snap-receive (or rotation) holds the jail's lock right now."""
    try:
        fd = os.open(home(fleet, minion_id) / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def history_copy(fleet, minion_id, snapshot="recent.0"):
    """The pushed tree of ``minion_id`` inside a snapshot (rsync keeps absolute paths)."""
    data = fleet.client_data(minion_id)
    return srv(fleet) / "history" / snapshot / minion_id / str(data).lstrip("/")


def tree_state(path):
    """Every entry under path (by its path below it) with what could change: to prove nothing did."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_uid)
    return out


def ssh_opts(fleet, minion_id):
    key = fleet.root_of(minion_id) / "etc" / "snap" / "id_ed25519"
    known = fleet.root_of(minion_id) / "etc" / "snap" / "known_hosts"
    return [
        "-F", "/dev/null", "-i", str(key), "-p", str(fleet.port),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known}", "-o", "ConnectTimeout=5",
    ]  # fmt: skip


def ssh(fleet, minion_id, *args, account=None, command=None, timeout=20):
    """ssh with ``minion_id``'s snap key to ``account`` (default: its own)."""
    argv = ["ssh", *ssh_opts(fleet, minion_id), *args, f"{account or 'snap-' + minion_id}@127.0.0.1"]
    if command:
        argv.append(command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def rsync_as(fleet, minion_id, *args, account=None):
    account = account or f"snap-{minion_id}"
    rsh = " ".join(["ssh", *ssh_opts(fleet, minion_id)])
    argv = ["rsync", "-e", rsh, *[a.replace("@H:", f"{account}@127.0.0.1:") for a in args]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)
