"""The release wheel as a fleet gets it, for the wheel tests and ``make demo``.

* :func:`release`: the wheel ``make dist`` built (``dist/``) and its SHA256SUMS.
* :func:`salt_venv`: a Python with only Salt in it, as a fleet's machines have
  before snap is installed: a copy of ``.venv-salt`` (``make install``), so no
  test pays for installing Salt.
* :func:`without_build_tools`: a command prefix that runs a program in a
  private mount namespace (``unshare -m``) in which libsquashfs, the C
  compilers, Rust and the C headers are not there: each library and compiler
  file has ``/dev/null`` bind-mounted over it, each tool directory an empty
  tmpfs. Nothing outside that namespace sees a change, and it ends with the
  program.
* :class:`WebServer`: a directory served over HTTP on 127.0.0.1 (a wheel URL, a
  package index).
"""

from __future__ import annotations

import functools
import glob
import http.server
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SALT_VENV = REPO / ".venv-salt"

# What a build needs and a fleet must not: compilers and linkers' front ends,
# Rust, the C headers, and libsquashfs itself (the wheel bundles its copy).
COMPILERS = ("cc", "c++", "gcc", "g++", "cpp", "clang", "clang++", "rustc", "cargo", "rustup")
TOOL_DIRS = (
    "/usr/lib/gcc",
    "/usr/libexec/gcc",
    "/usr/include",
    "/root/.cargo",
    "/root/.rustup",
    *glob.glob("/usr/lib/llvm-*"),
)
LIB_GLOBS = ("/usr/lib/*/libsquashfs.*", "/lib/*/libsquashfs.*")


def release() -> tuple[pathlib.Path, pathlib.Path]:
    """The manylinux wheel in ``dist/`` and the SHA256SUMS beside it."""
    wheels = sorted((REPO / "dist").glob("snap_backup-*-manylinux_*.whl"))
    sums = REPO / "dist" / "SHA256SUMS"
    if len(wheels) != 1 or not sums.exists():
        pytest.fail(f"dist/ must hold one manylinux snap wheel and SHA256SUMS (make dist), found {wheels}")
    return wheels[0], sums


def _link_or_copy(src, dst):
    """Hard links make a copy of the 230 MB template in a second; pip and Python
    only ever add or replace files in it, never write into one in place."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def salt_venv(dest: pathlib.Path) -> pathlib.Path:
    """Copy the Salt-only virtualenv to ``dest``; returns its python. Console
    scripts get ``dest``'s python in their ``#!`` line."""
    if not (SALT_VENV / "bin" / "salt-master").exists():
        pytest.fail(f"{SALT_VENV} is missing: run `make install`")
    shutil.copytree(SALT_VENV, dest, symlinks=True, copy_function=_link_or_copy)
    old, new = f"#!{SALT_VENV}/bin/", f"#!{dest}/bin/"
    for script in (dest / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(old.encode()):
            script.unlink()  # a hard link to the template's: write a new file
            script.write_bytes(new.encode() + data[len(old) :])
            script.chmod(0o755)
    return dest / "bin" / "python"


def _hidden() -> tuple[list[str], list[str]]:
    files = set()
    for name in COMPILERS:
        for found in filter(None, (shutil.which(name),)):
            files.add(os.path.realpath(found))
    for pattern in ("/usr/bin/*-linux-gnu-gcc*", "/usr/bin/*-linux-gnu-g++*", "/usr/bin/clang*", *LIB_GLOBS):
        files.update(os.path.realpath(p) for p in glob.glob(pattern))
    files = sorted(f for f in files if os.path.isfile(f) and stat.S_ISREG(os.stat(f).st_mode))
    dirs = sorted(d for d in TOOL_DIRS if os.path.isdir(d))
    return files, dirs


def without_build_tools(workdir: pathlib.Path, python: pathlib.Path | None = None) -> list[str]:
    """A command prefix (one script) that runs ``[prefix..., program, args...]``
    with no compiler and no libsquashfs in sight; with ``python`` the script
    runs that interpreter (usable as salt-factories' ``python_executable``)."""
    files, dirs = _hidden()
    name = f"{python.parent.parent.name}-python-without-build-tools" if python else "without-build-tools"
    inner, script = workdir / f"{name}.inside", workdir / name
    inner.write_text(
        "set -e\n"
        + "".join(f"mount --bind /dev/null {shlex.quote(f)}\n" for f in files)
        + "".join(f"mount -t tmpfs -o size=1m,mode=0755 snap-empty {shlex.quote(d)}\n" for d in dirs)
        + (f'exec {shlex.quote(str(python))} "$@"\n' if python else 'exec "$@"\n')
    )
    script.write_text(
        "#!/bin/sh\n"
        "# Run in a private mount namespace without compilers, C headers, Rust or libsquashfs.\n"
        f'exec unshare --mount --propagation private -- /bin/sh {shlex.quote(str(inner))} "$@"\n'
    )
    script.chmod(0o755)
    return [str(script)]


class WebServer:
    """Serve ``root`` over HTTP on 127.0.0.1 (a thread; every request logged in ``paths``)."""

    def __init__(self, root: pathlib.Path):
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                paths.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> WebServer:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def check_hidden(prefix: list[str], python: str) -> str:
    """Prove the namespace hides what it claims: returns what the probe saw."""
    probe = (
        "import ctypes, shutil, sys\n"
        f"found = [c for c in {COMPILERS!r} if shutil.which(c)]\n"
        "try:\n"
        "    ctypes.CDLL('libsquashfs.so.1'); lib = 'loaded'\n"
        "except OSError as exc:\n"
        "    lib = str(exc)\n"
        "print(f'compilers found: {found}; libsquashfs.so.1: {lib}')\n"
        "sys.exit(1 if found or lib == 'loaded' else 0)\n"
    )
    proc = subprocess.run([*prefix, python, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()
