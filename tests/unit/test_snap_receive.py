"""snap-receive's command validation: only snap's own rsync receiving commands pass,
and the receiver it starts is always bounded and confined, whatever the client asks."""

import importlib.machinery
import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from tests.conftest import REPO

loader = importlib.machinery.SourceFileLoader("snap_receive", str(REPO / "salt/snap/files/snap-receive"))
spec = importlib.util.spec_from_loader("snap_receive", loader)
receive = importlib.util.module_from_spec(spec)
loader.exec_module(receive)

DATA = "rsync --server -lHogDtpAXrSe.iLsfxCIvu --timeout=600 --bwlimit=1000 --stats --numeric-ids --fake-super . data/"
STATE = "rsync --server -e.LsfxCIvu --timeout=600 . ./"


def test_snaps_own_commands_pass():
    flags, longs, dest, timeout = receive.parse(DATA)
    assert flags == "-lHogDtpAXrSe.iLsfxCIvu" and dest == "data" and timeout == 600
    assert "--fake-super" not in longs, "it is added by snap-receive itself, always"
    assert not any(o.startswith("--timeout") for o in longs), "the receiver sets its own"
    assert receive.parse(STATE)[2] == "state"


def test_the_receiver_never_talks_back():
    # -v would make the receiver send names back; the capability letters after e. stay.
    flags, *_ = receive.parse("rsync --server -vvlogDtpre.iLsfxCIvu . data/")
    assert flags == "-logDtpre.iLsfxCIvu"


def test_the_receiver_bounds_a_transfer_whatever_the_client_asks():
    assert receive.io_timeout(None, 300) == 300, "no --timeout: the receiver's own"
    assert receive.io_timeout(0, 300) == 300, "--timeout=0 (never) is not honoured"
    assert receive.io_timeout(60, 300) == 60, "a stricter client timeout is fine"
    assert receive.io_timeout(86400, 300) == 300


@pytest.mark.parametrize(
    "command,why",
    [
        ("", "no command"),
        ("id", "rsync --server"),
        ("rsync --server --sender -logDtpre.iLsfxCIvu . data/", "can only write"),
        ("rsync --server -e.LsfxCIvu . ../", "not allowed"),
        ("rsync --server -e.LsfxCIvu . /srv/snap/history/", "not allowed"),
        ("rsync --server -e.LsfxCIvu . data/../../x", "not allowed"),
        ("rsync --server -se.LsfxCIvu . data/", "not allowed"),
        ("rsync --server -Le.LsfxCIvu . data/", "not allowed"),
        ("rsync --server -ce.LsfxCIvu . data/", "not allowed"),  # compares stored content
        ("rsync --server -ue.LsfxCIvu . data/", "not allowed"),  # compares stored times
        ("rsync --server -me.LsfxCIvu . data/", "not allowed"),  # would read a filter list
        ("rsync --server -re.LsfxCIvu . ./", "one file"),
        ("rsync --server -re.LsfxCIvu --delete . data/", "fresh tree"),
        ("rsync --server -re.LsfxCIvu --delete-excluded . data/", "fresh tree"),
        ("rsync --server -e.LsfxCIvu --existing . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --ignore-existing . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --link-dest=/srv/snap/history . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --log-file=/etc/passwd . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --temp-dir=/tmp . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --max-alloc=0 . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --debug=FILTER . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --timeout=1;id . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --bwlimit=1' . data/", "refused"),
        ("rsync --server -e.LsfxCIvu . data/\nid", "refused"),
        ("rsync --server -e.LsfxCIvu data/", "unexpected"),
        ("rsync --server --daemon --config=/etc/shadow .", "unexpected"),
    ],
)
def test_everything_else_is_refused(command, why):
    with pytest.raises(receive.Refused, match=why):
        receive.parse(command)


def test_the_receiver_is_always_confined_and_never_sends_checksums():
    argv = receive.receiver_argv("-logDtpre.iLsfxCIvu", ["--stats"], 300, "/j/snap-web1", "/j/snap-web1/incoming")
    assert "--confine-root=/j/snap-web1/incoming" in argv, "no fail-open: an rsync without it refuses to run"
    assert "--whole-file" in argv and "--fake-super" in argv and "--timeout=300" in argv
    assert not any(a.startswith("--delete") for a in argv)


def test_the_receiving_rsync_runs_as_the_account_without_privileges():
    class Pw:
        pw_uid, pw_gid = 1234, 1234

    argv = receive.as_account(Pw, ["/usr/bin/rsync", "--server"])
    assert argv[0] == "/usr/bin/setpriv" and "--reuid=1234" in argv and "--no-new-privs" in argv
    assert "--clear-groups" in argv and "--bounding-set=-all" in argv
    assert argv[-2:] == ["/usr/bin/rsync", "--server"]


# -- played as root: code running as the account, against snap-receive's own pieces ----

SCRIPT = REPO / "salt/snap/files/snap-receive"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs the receiver as another uid (CI runs as root)")


def in_child(code):
    """Run ``code`` in a fresh Python that loaded snap-receive as ``r`` (so a
    subreaper or a seccomp filter never touches the test run itself)."""
    prelude = (
        "import importlib.machinery, importlib.util, os, pwd, signal, subprocess, sys, time\n"
        f"l = importlib.machinery.SourceFileLoader('r', {str(SCRIPT)!r})\n"
        "s = importlib.util.spec_from_loader('r', l); r = importlib.util.module_from_spec(s); l.exec_module(r)\n"
    )
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


@pytest.fixture
def shared_tmp():
    """A directory the account ("nobody") can reach (pytest's tmp_path is root's 0700)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="snap-receive-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@as_root
def test_nothing_the_receiver_starts_outlives_the_transfer():
    # An rsync receiver exploit leaves the transfer's session (setsid after a
    # fork): it would keep writing into the jail after root recorded the push,
    # burn CPU forever, and wait for rotation's rsync (same uid: it may trace it).
    out = in_child("""
        r.harden() if hasattr(r, "harden") else None
        pw = pwd.getpwnam("nobody")
        escape = "import os, time\\nif os.fork() == 0:\\n os.setsid()\\n time.sleep(30)\\n"
        code, why = r.run_as(pw, ["/usr/bin/python3", "-c", escape], "/", dict(r.DEFAULT_LIMITS), 30, "/")
        left = subprocess.run(["pgrep", "-u", str(pw.pw_uid), "-f", "time.sleep"], capture_output=True, text=True)
        print("exit", code, "left:", left.stdout.split())
    """)
    print("attack: a process of the receiver leaves its session;", out.stdout.strip(), out.stderr[-300:])
    left = [int(p) for p in re.findall(r"'(\d+)'", out.stdout)]
    for pid in left:  # what this test started, by pid
        os.kill(pid, signal.SIGKILL)
    assert out.stdout.strip() == "exit 0 left: []"


@as_root
def test_the_receiver_creates_no_btrfs_subvolume_and_still_receives(shared_tmp):
    tmp_path = shared_tmp
    # Any user may create a btrfs subvolume where it can write, and a new
    # subvolume is outside the qgroup holding the account's quota. The
    # receiver (and what it runs) gets EPERM for every btrfs ioctl; rsync works.
    (tmp_path / "src").mkdir()
    (tmp_path / "src/f").write_text("data\n")
    for p in (tmp_path, tmp_path / "src", tmp_path / "src/f"):
        os.chown(p, 65534, 65534)
    out = in_child(f"""
        import errno, fcntl
        pw = pwd.getpwnam("nobody")
        probe = ("import errno, fcntl, os\\n"
                 "fd = os.open({str(tmp_path)!r}, os.O_RDONLY)\\n"
                 "try:\\n fcntl.ioctl(fd, 0x5000940E, bytearray(4096))\\n print('created')\\n"  # BTRFS_IOC_SUBVOL_CREATE
                 "except OSError as e:\\n print(errno.errorcode[e.errno])\\n")
        for label, limits in (("unfiltered", None), ("receiver", dict(r.DEFAULT_LIMITS))):
            if limits is None:
                p = subprocess.run(r.as_account(pw, ["/usr/bin/python3", "-c", probe]), capture_output=True, text=True)
            else:
                p = subprocess.run(r.as_account(pw, ["/usr/bin/python3", "-c", probe]), capture_output=True, text=True,
                                   preexec_fn=r.confine(limits))
            print(label, p.stdout.strip())
        p = subprocess.run(r.as_account(pw, ["/usr/bin/rsync", "-a", "{tmp_path}/src/", "{tmp_path}/dst/"]),
                           preexec_fn=r.confine(dict(r.DEFAULT_LIMITS)))
        print("rsync", p.returncode)
    """)
    print("attack: a btrfs subvolume outside the quota;", out.stdout.strip(), out.stderr[-300:])
    lines = out.stdout.split("\n")
    assert lines[0] != "unfiltered EPERM", "the probe must reach the kernel without the filter"
    assert lines[1] == "receiver EPERM" and lines[2] == "rsync 0", out.stdout
    assert (tmp_path / "dst/f").read_text() == "data\n"


@as_root
def test_what_the_caller_of_sudo_sets_changes_no_record(shared_tmp):
    tmp_path = shared_tmp
    # sudo hands the invoking user's resource limits and ignored signals to
    # root's snap-receive. Code running as the account starts it with a
    # 200-byte file-size limit (receipts cut mid-line, jail.json truncated) and SIGCHLD ignored
    # (Python then reads every child's exit status as 0) and pushes a file the
    # receiver must refuse (larger than max_file_size): the push must still be
    # recorded, whole and as failed.
    jails, src = tmp_path / "jails", tmp_path / "src"
    home = jails / "nobody"
    (home / "incoming").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(jails, 0o755)
    os.chmod(home, 0o711)
    os.chown(home / "incoming", 65534, 65534)
    os.chmod(home / "incoming", 0o700)
    src.mkdir()
    (src / "big").write_bytes(b"x" * 4096)
    cfg = tmp_path / "server.json"
    cfg.write_text(json.dumps({"jails_dir": str(jails), "accounts": {"nobody": "web1"},
                               "limits": {"max_file_size": 1024, "io_timeout": 30}}))  # fmt: skip
    shell = tmp_path / "ssh"
    shell.write_text(
        "#!/usr/bin/python3\nimport os, resource, signal, sys\n"
        "os.environ.update(SUDO_UID='65534', SSH_ORIGINAL_COMMAND=' '.join(sys.argv[2:]))\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        f"os.execv('/usr/bin/python3', ['python3', '-I', {str(SCRIPT)!r}, {str(cfg)!r}])\n"
    )
    shell.chmod(0o755)
    push = subprocess.run(["rsync", "-rt", "--timeout=30", "-e", str(shell), f"{src}/", "backup:data/"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (home / "receipts.jsonl").exists(), push.stderr
    receipts = (home / "receipts.jsonl").read_text()
    jail = json.loads((home / "jail.json").read_text())
    print("attack: FSIZE 200 and SIGCHLD ignored through sudo;", "client exit", push.returncode,
          "receipt", receipts.strip(), "jail", jail)  # fmt: skip
    assert receipts.endswith("\n") and len(receipts.splitlines()) == 1
    entry = json.loads(receipts)
    assert entry["exit"] not in (0, 24), "a file the receiver could not store: not complete"
    assert jail.get("current") is None, "a broken push is never the newest complete tree"
