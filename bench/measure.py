"""Run one command and measure it the same way whatever it is.

- wall: perf_counter around fork .. wait4.
- cpu: user + sys of the command and every descendant it waited for (a
  shell pipeline, gpg's helpers, ...), as GNU time reports it.
- peak RSS of the whole process tree: the command runs in a session of its
  own; a sampler thread sums the RSS of every process in that session (known
  processes every 25 ms, a scan of /proc for new ones every 250 ms), and the
  result is at least the largest single process's exact ru_maxrss, so a
  short spike between two samples is not lost entirely.
  The command is started through /usr/bin/time because Linux carries the
  high-water RSS of the forking process into a child's ru_maxrss across
  exec: children of this (large) Python process would all report at least
  its size, children of the small `time` process report their own.
- peak temp disk: the bytes allocated under a watched directory (st_blocks),
  sampled every 25 ms; a file that lives shorter than that can be missed.
- optionally the CPU another process (the S3 server) spent meanwhile.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)
TICK = os.sysconf("SC_CLK_TCK")


class CommandFailed(RuntimeError):
    pass


@dataclasses.dataclass
class Sample:
    wall: float
    user: float
    sys: float
    rss_peak: int  # bytes
    rss_max_single: int  # bytes
    disk_peak: int  # bytes
    load: float  # 1-minute load average when it started
    server_cpu: float | None = None

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def _stat(pid: int):
    """(session id, rss bytes) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] is field 3 (state): session is field 6, rss field 24.
    return int(rest[3]), int(rest[21]) * PAGE


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        data = handle.read()
    rest = data[data.rindex(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / TICK  # utime, stime


def dir_bytes(path: str) -> int:
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            pass
    return total


class _Sampler(threading.Thread):
    def __init__(self, sid: int, watch: str | None):
        super().__init__(daemon=True)
        self.sid, self.watch = sid, watch  # the session leader is GNU time: not counted
        self.stop = threading.Event()
        self.rss_peak = 0
        self.disk_peak = 0
        self.pids = {sid}

    def scan(self):
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _stat(int(name))
                if st and st[0] == self.sid:
                    self.pids.add(int(name))

    def run(self):
        tick = 0
        while not self.stop.is_set():
            if tick % 10 == 0:
                self.scan()
            total = 0
            for pid in list(self.pids):
                if pid == self.sid:
                    continue
                st = _stat(pid)
                if st is None or st[0] != self.sid:
                    self.pids.discard(pid)
                else:
                    total += st[1]
            self.rss_peak = max(self.rss_peak, total)
            if self.watch:
                self.disk_peak = max(self.disk_peak, dir_bytes(self.watch))
            tick += 1
            self.stop.wait(0.025)


def measure(cmd, *, shell=False, watch=None, env=None, cwd=None, stdin=None, stdout=None,
            server_pid=None, timeout=3600) -> Sample:  # fmt: skip
    """Run ``cmd`` to completion and measure it; CommandFailed (with the end of
    its stderr) when it exits non-zero."""
    load = os.getloadavg()[0]
    err = tempfile.TemporaryFile()
    report = tempfile.NamedTemporaryFile(prefix="snap-bench-time-")
    if shell:
        cmd = ["/bin/sh", "-c", cmd]
    cmd = [TIME, "-f", "%U %S %M", "-o", report.name, *map(str, cmd)]
    server_before = cpu_seconds(server_pid) if server_pid else None
    fin = open(stdin, "rb") if isinstance(stdin, (str, os.PathLike)) else stdin
    fout = open(stdout, "wb") if isinstance(stdout, (str, os.PathLike)) else (stdout or subprocess.DEVNULL)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=fin or subprocess.DEVNULL,
                                stdout=fout, stderr=err, start_new_session=True)  # fmt: skip
        sampler = _Sampler(proc.pid, watch)
        sampler.start()
        killer = threading.Timer(timeout, os.killpg, (proc.pid, 9))
        killer.start()
        _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    finally:
        if fin is not None and fin is not stdin:
            fin.close()
        if fout is not stdout and fout is not subprocess.DEVNULL:
            fout.close()
    if watch:
        sampler.disk_peak = max(sampler.disk_peak, dir_bytes(watch))
    if proc.returncode != 0:
        err.seek(0)
        tail = err.read()[-3000:].decode(errors="replace")
        raise CommandFailed(f"{cmd!r} exited {proc.returncode}:\n{tail}")
    user, sys_, maxrss_kb = report.read().decode().split()[-3:]
    report.close()
    single = int(maxrss_kb) * 1024
    return Sample(
        wall=wall,
        user=float(user),
        sys=float(sys_),
        rss_peak=max(sampler.rss_peak, single),
        rss_max_single=single,
        disk_peak=sampler.disk_peak,
        load=load,
        server_cpu=(cpu_seconds(server_pid) - server_before) if server_pid else None,
    )
