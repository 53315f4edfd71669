"""Small helpers shared by the test tiers."""

import shutil
import subprocess

import pytest


def need(*programs):
    """Fail (not skip) when a program the test needs is missing: `make install` provides them."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing programs {missing}: run `make install`")


def run(*args, check=True, **kwargs):
    """subprocess.run with text output captured; failures show stderr."""
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def stop_process(proc, timeout=10):
    """Terminate a child and reap it; kill it if it does not go in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
