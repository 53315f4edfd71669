"""Real system state the tests touch, and put back: sshd, users, crontabs.

CI runs as root on a real machine: whatever a test creates here (users,
groups, root's crontab lines, an sshd) it removes again.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pathlib
import pwd
import signal
import subprocess
import time

from pytestshellutils.utils.ports import get_unused_localhost_port

from tests.support.helpers import stop_process

SSHD = "/usr/sbin/sshd"


class Sshd:
    """A real OpenSSH server on 127.0.0.1:<port>, configured under ``root``
    like a Debian system sshd (so snap's state can add its Match block to
    ``<root>/etc/ssh/sshd_config.d``)."""

    def __init__(self, root: pathlib.Path, port: int | None = None):
        self.root = root
        self.port = port or get_unused_localhost_port()
        self.etc = root / "etc" / "ssh"
        self.config = self.etc / "sshd_config"
        self.host_key = self.etc / "ssh_host_ed25519_key"
        self.log = root / "var" / "log" / "sshd-test.log"
        self.proc: subprocess.Popen | None = None
        self._made_privsep = False

    def write_config(self):
        (self.etc / "sshd_config.d").mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True
            )
        self.config.write_text(
            f"""# sshd for snap's tests (127.0.0.1 only), laid out like Debian's.
Include {self.etc}/sshd_config.d/*.conf
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.root}/run/sshd-test.pid
UsePAM yes
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile none
StrictModes yes
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
"""
        )

    def start(self):
        self.write_config()
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        if not os.path.isdir("/run/sshd"):  # privilege separation directory
            os.makedirs("/run/sshd", mode=0o755)
            self._made_privsep = True
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["ssh-keyscan", "-p", str(self.port), "-T", "2", "127.0.0.1"], capture_output=True
            )
            if probe.returncode == 0 and probe.stdout:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"sshd did not come up on 127.0.0.1:{self.port}; see {self.log}")

    def reload(self):
        """SIGHUP: re-read the configuration (what a service reload does)."""
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True)
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["ssh-keyscan", "-p", str(self.port), "127.0.0.1"], capture_output=True).stdout:
                return
            time.sleep(0.2)
        raise RuntimeError("sshd did not come back after SIGHUP")

    def stop(self):
        stop_process(self.proc)
        self.proc = None
        if self._made_privsep:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")
            self._made_privsep = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def host_key_line(self) -> str:
        return (self.etc / "ssh_host_ed25519_key.pub").read_text().strip()


def crontab_lines() -> list[str]:
    proc = subprocess.run(["crontab", "-l", "-u", "root"], capture_output=True, text=True)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


@contextlib.contextmanager
def restored_root_crontab():
    """Put root's crontab back as it was afterwards."""
    before = subprocess.run(["crontab", "-l", "-u", "root"], capture_output=True, text=True)
    try:
        yield
    finally:
        if before.returncode == 0:
            subprocess.run(["crontab", "-u", "root", "-"], input=before.stdout, text=True, check=True)
        else:
            subprocess.run(["crontab", "-r", "-u", "root"], capture_output=True)


def users() -> set[str]:
    return {p.pw_name for p in pwd.getpwall()}


def groups() -> set[str]:
    return {g.gr_name for g in grp.getgrall()}


@contextlib.contextmanager
def removed_new_users_and_groups():
    """Delete every user and group created meanwhile (with their mail spool)."""
    users_before, groups_before = users(), groups()
    try:
        yield
    finally:
        for name in sorted(users() - users_before):
            subprocess.run(["userdel", "-f", name], capture_output=True)
        for name in sorted(groups() - groups_before):
            subprocess.run(["groupdel", name], capture_output=True)
