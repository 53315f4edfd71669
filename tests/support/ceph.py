"""A real Ceph RADOS Gateway on 127.0.0.1: one monitor, one memstore OSD,
one radosgw, no mgr, every file under one temporary directory.

Debian 12's packages (``radosgw ceph-mon ceph-osd``, Ceph 16.2 Pacific,
installed by ``make install``) started as FIELD-NOTES describes: fast paxos
settings (else each pool radosgw-admin creates costs a second), the
objecter tick on the first radosgw-admin call (else it waits 5 s for the OSD
map), everything bound to 127.0.0.1, logs, sockets and crash dumps inside
the directory. :meth:`Ceph.stop` kills the recorded pids (radosgw takes
2-10 s on SIGTERM; nothing is lost, memstore keeps nothing) and checks
``/proc/PID/status`` until each is gone or a zombie, then removes the
directory.

Users: ``snap-admin`` owns the buckets (the administrator), ``snap-backup``
is the backup server's put-only identity (what it may do comes from the
bucket policy, as snap.provision writes it), and :meth:`Ceph.user` makes more
(a read-only restore identity). A user's ARN in a bucket policy is
``arn:aws:iam:::user/<uid>``.

Run ``python -m tests.support.ceph`` to start one, print its timing and
memory, and stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

REGION = "us-east-1"
PROGRAMS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph-authtool", "monmaptool", "ceph")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _state(pid: int) -> str:
    """The process state letter from /proc (``Z`` for a zombie, ``""`` once gone):
    a killed daemon stays a zombie until PID 1 reaps it, and ``kill -0`` still
    succeeds on a zombie (FIELD-NOTES)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("State:"):
                    return line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return ""


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class CephError(RuntimeError):
    pass


class Ceph:
    """A one-node Ceph cluster with a RADOS Gateway, for a test session."""

    ADMIN = "snap-admin"
    BACKUP = "snap-backup"

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="snap-ceph-"))
        self.conf = self.dir / "ceph.conf"
        self.keyring = self.dir / "keyring"
        self.mon_port = _free_port()
        self.port = _free_port()
        self.fsid = str(uuid.uuid4())
        self.pids: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.timings: dict[str, float] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Ceph:
        missing = [p for p in PROGRAMS if shutil.which(p) is None]
        if missing:
            raise CephError(f"missing {', '.join(missing)}: run `make install` (radosgw ceph-mon ceph-osd)")
        t0 = time.monotonic()
        try:
            self._configure()
            self._start_mon()
            self.timings["mon"] = time.monotonic() - t0
            self._start_osd()
            self.timings["osd"] = time.monotonic() - t0
            for uid in (self.ADMIN, self.BACKUP):
                self.user(uid, first=uid == self.ADMIN)
            self.timings["users"] = time.monotonic() - t0
            self._start_rgw()
            self.timings["rgw"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Ceph:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """SIGKILL every recorded pid, wait until each is gone or a zombie, remove the directory."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        for name, proc in self.procs.items():
            while _state(proc.pid) not in ("", "Z"):
                if time.monotonic() > deadline:
                    raise CephError(f"{name} (pid {proc.pid}) did not die after SIGKILL")
                time.sleep(0.01)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)  # our own child: reap it
        self.procs.clear()
        self.pids.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def rss_mib(self) -> float:
        return sum(_rss_kib(pid) for pid in self.pids.values()) / 1024

    # -- setup steps ----------------------------------------------------------
    def _configure(self):
        d = self.dir
        for sub in ("mon", "osd", "run", "log", "crash", "rgw"):
            (d / sub).mkdir()
        self.conf.write_text(
            f"""[global]
fsid = {self.fsid}
mon host = v2:127.0.0.1:{self.mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind msgr1 = false
keyring = {self.keyring}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
log file = {d}/log/$name.log
mon cluster log file = {d}/log/cluster.log
run dir = {d}/run
admin socket = {d}/run/$name.asok
crash dir = {d}/crash
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon allow pool delete = false
mon data avail crit = 0
mon data avail warn = 0
mon warn on pool no redundancy = false
paxos propose interval = 0.01
paxos min wait = 0.001
osd objectstore = memstore
memstore device bytes = 2147483648
osd data = {d}/osd
mon data = {d}/mon
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{self.port}
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw thread pool size = 64
"""
        )
        self._run(
            "ceph-authtool", "--create-keyring", str(self.keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"
        )
        self._run("ceph-authtool", str(self.keyring), "--gen-key", "-n", "client.admin",
                  "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *")  # fmt: skip
        self._run("ceph-authtool", str(self.keyring), "--gen-key", "-n", "client.rgw.a",
                  "--cap", "mon", "allow rw", "--cap", "osd", "allow rwx")  # fmt: skip
        self._run("monmaptool", "--create", "--fsid", self.fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{self.mon_port}]", str(d / "monmap"))  # fmt: skip
        self._run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(d / "monmap"),
                  "--keyring", str(self.keyring))  # fmt: skip

    def _daemon(self, name: str, *args: str):
        log = open(self.dir / "log" / f"{name}.stderr", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        log.close()
        self.procs[name] = proc
        self.pids[name] = proc.pid
        return proc

    def _start_mon(self):
        self._daemon("mon", "ceph-mon", "-c", str(self.conf), "-f", "-i", "a")
        self._wait(lambda: self._ceph("mon", "stat", check=False).returncode == 0, "the monitor", "mon")

    def _start_osd(self):
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid).stdout.strip()
        if osd_id != "0":
            raise CephError(f"ceph osd new gave id {osd_id!r}, expected 0")
        self._run("ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs", "--mkkey", "--osd-uuid", osd_uuid,
                  "--no-mon-config", "--keyring", str(self.dir / "osd" / "keyring"))  # fmt: skip
        self._ceph(
            "auth",
            "add",
            "osd.0",
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "-i",
            str(self.dir / "osd" / "keyring"),
        )
        self._daemon("osd", "ceph-osd", "-c", str(self.conf), "-f", "-i", "0", "--osd-data", str(self.dir / "osd"),
                     "--keyring", str(self.dir / "osd" / "keyring"))  # fmt: skip

        def up():
            out = self._ceph("osd", "stat", "--format", "json", check=False)
            return out.returncode == 0 and json.loads(out.stdout or "{}").get("num_up_osds") == 1

        self._wait(up, "the OSD", "osd")

    def _start_rgw(self):
        self._daemon("rgw", "radosgw", "-c", str(self.conf), "-f", "-n", "client.rgw.a", "--keyring", str(self.keyring))

        def answers():
            try:
                with urllib.request.urlopen(self.endpoint, timeout=1):
                    return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False

        self._wait(answers, "radosgw", "rgw", timeout=60)

    def user(self, uid: str, first: bool = False) -> tuple[str, str]:
        """Create a RGW user; returns (access key, secret key)."""
        extra = ["--objecter-tick-interval=0.1"] if first else []
        out = self._run("radosgw-admin", "-c", str(self.conf), "-n", "client.admin", *extra,
                        "user", "create", f"--uid={uid}", f"--display-name={uid}").stdout  # fmt: skip
        key = json.loads(out)["keys"][0]
        self.keys[uid] = (key["access_key"], key["secret_key"])
        return self.keys[uid]

    # -- clients --------------------------------------------------------------
    def session(self, uid: str = ADMIN):
        import boto3

        key_id, secret = self.keys[uid]
        return boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=REGION)

    def client(self, uid: str = ADMIN, service: str = "s3"):
        from botocore.config import Config

        cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        return self.session(uid).client(service, endpoint_url=self.endpoint, config=cfg)

    def credentials_file(self, path: pathlib.Path, profiles: dict[str, str]) -> pathlib.Path:
        """An AWS shared credentials file with ``{profile: uid}``, mode 0600."""
        lines = []
        for profile, uid in profiles.items():
            key_id, secret = self.keys[uid]
            lines += [f"[{profile}]", f"aws_access_key_id = {key_id}", f"aws_secret_access_key = {secret}", ""]
        path.write_text("\n".join(lines))
        path.chmod(0o600)
        return path

    @staticmethod
    def arn(uid: str) -> str:
        return f"arn:aws:iam:::user/{uid}"

    # -- helpers --------------------------------------------------------------
    def _run(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise CephError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return proc

    def _ceph(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ("ceph", "-c", str(self.conf), "-n", "client.admin", "--connect-timeout", "10", *args)
        if check:
            return self._run(*cmd)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def _wait(self, ready, what: str, name: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not ready():
            proc = self.procs[name]
            if proc.poll() is not None or time.monotonic() > deadline:
                log = self.dir / "log" / f"{name}.stderr"
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise CephError(f"{what} did not start (exit {proc.poll()}): {text}")
            time.sleep(0.05)


def main() -> int:  # pragma: no cover - a measurement aid
    t0 = time.monotonic()
    ceph = Ceph().start()
    started = time.monotonic() - t0
    try:
        s3 = ceph.client()
        s3.create_bucket(Bucket="probe")
        first = time.monotonic() - t0
        print(json.dumps({"started_s": round(started, 2), "first_s3_answer_s": round(first, 2),
                          "steps_s": {k: round(v, 2) for k, v in ceph.timings.items()},
                          "rss_mib": round(ceph.rss_mib(), 1),
                          "rss_by_daemon_mib": {n: round(_rss_kib(p) / 1024, 1) for n, p in ceph.pids.items()}}))  # fmt: skip
    finally:
        t1 = time.monotonic()
        ceph.stop()
        print(f"stopped in {time.monotonic() - t1:.2f}s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
