"""The shipped type stubs (snap_core/_rust.pyi) match the compiled module."""

import pathlib
import subprocess
import sys

ALLOWLIST = pathlib.Path(__file__).with_name("stubtest-allowlist.txt")


def test_stubtest_finds_no_difference(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "snap_core._rust", "--mypy-config-file", "/dev/null",
         "--allowlist", str(ALLOWLIST)],
        capture_output=True, text=True, cwd=tmp_path,  # not the source tree: the installed package
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
