"""The release wheel on machines that have never built anything (issue 15).

Two Pythons with only Salt in them (copies of ``.venv-salt``): the master's and
the minion's. Every command and both daemons run inside a private mount
namespace without compilers, Rust, C headers or libsquashfs
(tests/support/wheel.py: ``/dev/null`` bind-mounted over each file, an empty
tmpfs over each directory; the probe below shows it holds). Then the README's
"Setting up a real fleet", on loopback:

1. ``make dist``'s wheel and SHA256SUMS go next to the formula on the master's
   file server (``salt/snap/files/dist/``); the master's Python gets the wheel
   with pip (no index, no build).
2. The master runs with that formula and the example pillar as its roots and
   the snap ext_pillar: no ``module_dirs``, no ``_modules`` in the file roots,
   and nothing is ever synced.
3. ``state.apply snap.core`` installs the wheel on the minion from the master
   (hash checked); without a restart the minion then has snap's modules,
   through the wheel's ``salt.loader`` entry point.
4. ``salt-call snap.*``, the ext_pillar's schedule and ``salt-run snap.status``
   work.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import zlib

import pytest
from saltfactories.manager import FactoriesManager

from tests.conftest import REPO
from tests.support.fleet import MINION_OVERRIDES, write_pillar_tree
from tests.support.wheel import check_hidden, release, salt_venv, without_build_tools

MINION = "wheelsrv1"
# A second server the master knows (its key accepted) that never pushed.
OTHER = "wheelsrv2"

# Import everything, pack a tree through the bundled libsquashfs and list it
# back, and say from where libsquashfs was loaded.
IMPORT_PROBE = r"""
import json, os, sys, tempfile
import snap_core, snap_core.api, snap_core.cli, snap_core.fleet, snap_core.fleetstatus
import snap_core.provision, snap_core.restore_cli, snap_core.saltext
with tempfile.TemporaryDirectory() as tmp:
    os.makedirs(f"{tmp}/src/etc")
    open(f"{tmp}/src/etc/hosts", "w").write("127.0.0.1 localhost\n")
    snap_core.pack(f"{tmp}/src", f"{tmp}/img.sqfs", compressor="lz4")
    names = [os.path.basename(e["path"]).decode() for e in snap_core.list_image(f"{tmp}/img.sqfs", "etc")]
maps = {l.split()[-1] for l in open("/proc/self/maps") if "libsquashfs" in l}
print(json.dumps({"version": snap_core.__version__, "names": names, "libsquashfs": sorted(maps)}))
"""


def run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel_fleet(salt_factories, event_listener, salt_factories_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    wheel, sums = release()
    root = salt_factories_root / "wheel-fleet"
    # The formula (no _modules/ and friends in it) with the release beside it.
    formula = root / "srv" / "salt"
    shutil.copytree(REPO / "salt", formula, symlinks=False, ignore=shutil.ignore_patterns("dist"))
    assert not list(formula.glob("_*")), "the formula carries no loader modules"
    (formula / "snap" / "files" / "dist").mkdir()
    for artifact in (wheel, sums):
        shutil.copy(artifact, formula / "snap" / "files" / "dist")
    # The minion doubles as the backup server for salt-run snap.status.
    pillar = write_pillar_tree(root / "srv" / "pillar", f"snap:\n  backup_server:\n    minion_id: {MINION}\n")

    master_py = salt_venv(work / "master-venv")
    minion_py = salt_venv(work / "minion-venv")
    hidden = without_build_tools(work)
    seen = check_hidden(hidden, str(master_py))
    run([*hidden, str(master_py), "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheel)])
    probe = json.loads(run([*hidden, str(master_py), "-c", IMPORT_PROBE]))

    # Its own manager: the session's puts the test run's site-packages first on
    # every daemon's sys.path (code_dir), which would hide what the clean
    # Pythons lack.
    manager = FactoriesManager(
        root_dir=root / "daemons",
        log_server_host="127.0.0.1",
        log_server_port=salt_factories.log_server_port,
        log_server_level="error",
        event_listener=event_listener,
        slow_stop=False,
    )
    master = manager.salt_master_daemon(
        "wheel-master",
        overrides={
            "file_roots": {"base": [str(formula)]},
            "pillar_roots": {"base": [str(pillar)]},
            "ext_pillar": [{"snap": {}}],
            "pillar_mask_output": False,
        },
    )
    master.python_executable = without_build_tools(work, master_py)[0]
    minion = master.salt_minion_daemon(MINION, overrides=MINION_OVERRIDES)
    minion.python_executable = without_build_tools(work, minion_py)[0]
    with master.started(), minion.started():
        salt = master.salt_cli(timeout=300)
        before = {
            "importable": subprocess.run([str(minion_py), "-c", "import snap_core"], capture_output=True).returncode
            == 0,
            "modules": salt.run("sys.list_modules", "snap", minion_tgt=MINION).data,
        }
        # README: snap.core installs the wheel on every minion from the master.
        runs = {
            name: salt.run("state.apply", "snap.core", *extra, minion_tgt=MINION)
            for name, extra in (("dry", ["test=True"]), ("first", []), ("second", []))
        }
        yield {
            "master": master,
            "minion": minion,
            "minion_py": minion_py,
            "seen": seen,
            "probe": probe,
            "wheel": wheel,
            "before": before,
            **runs,
        }


def test_the_namespace_hides_compilers_and_libsquashfs_and_the_wheel_brings_its_own(wheel_fleet):
    print(wheel_fleet["seen"], wheel_fleet["probe"])
    probe = wheel_fleet["probe"]
    assert probe["names"] == ["hosts"], probe
    assert len(probe["libsquashfs"]) == 1 and "/snap_backup.libs/libsquashfs-" in probe["libsquashfs"][0], probe


def test_snap_core_installs_the_wheel_on_the_minion_from_the_master(wheel_fleet):
    assert wheel_fleet["before"] == {"importable": False, "modules": []}, "the minion had snap before snap.core"
    dry, first, second = wheel_fleet["dry"], wheel_fleet["first"], wheel_fleet["second"]
    assert dry.returncode == 0 and all(r["result"] is not False for r in dry.data.values()), dry.stdout
    assert first.returncode == 0, first.stdout
    changed = {r["__id__"] for r in first.data.values() if r["changes"]}
    assert {"snap-core-wheel", "snap-core"} <= changed, first.data
    assert second.returncode == 0 and not [r for r in second.data.values() if r["changes"]], second.data

    # No restart, no sync: the running minion now has snap's modules from the wheel.
    master, minion = wheel_fleet["master"], wheel_fleet["minion"]
    version = master.salt_cli(timeout=120).run("snap.version", minion_tgt=MINION)
    assert version.data == wheel_fleet["wheel"].name.split("-")[1], version.stdout
    extmods = minion.config["extension_modules"]
    synced = subprocess.run(["find", extmods, "-name", "snap.py"], capture_output=True, text=True).stdout
    assert synced == "", f"snap modules were synced: {synced}"
    assert not minion.config.get("module_dirs") and not master.config.get("module_dirs")
    # ... and it runs from its own Python, nothing of the test run's on its path.
    grains = master.salt_cli(timeout=120).run("grains.item", "pythonexecutable", "pythonpath", minion_tgt=MINION).data
    assert grains["pythonexecutable"] == str(wheel_fleet["minion_py"]), grains
    assert not [p for p in grains["pythonpath"] if str(REPO) in p], grains["pythonpath"]


def test_salt_call_snap_and_the_ext_pillar_work_from_the_wheel(wheel_fleet):
    schedule = wheel_fleet["minion"].salt_call_cli(timeout=120).run("snap.schedule")
    assert schedule.returncode == 0, schedule.stderr
    assert schedule.data["minute"] == zlib.crc32(MINION.encode()) % 60
    salt = wheel_fleet["master"].salt_cli(timeout=120)
    assert salt.run("snap.account_name", minion_tgt=MINION).data == f"snap-{MINION}"
    key = salt.run("snap.key_status", minion_tgt=MINION)
    assert key.returncode == 0 and key.data["private"] is False, key.data
    assert salt.run("sys.list_state_modules", "snap", minion_tgt=MINION).data == ["snap"]


def test_salt_run_snap_status_works_from_the_wheel(wheel_fleet):
    master, minion = wheel_fleet["master"], wheel_fleet["minion"]
    accepted = pathlib.Path(master.config["pki_dir"]) / "minions"
    shutil.copy(accepted / MINION, accepted / OTHER)
    # The backup server's configuration, written by the wheel's own state module.
    config = pathlib.Path(minion.config["root_dir"]) / "etc" / "snap" / "server.json"
    written = master.salt_cli(timeout=120).run(
        "state.single", "snap.server_config", f"name={config}", minion_tgt=MINION
    )
    assert written.returncode == 0 and config.exists(), written.stdout

    ret = master.salt_run_cli(timeout=120).run("snap.status", f"tgt={MINION}", "timeout=3")
    assert ret.data and "servers" in ret.data, ret.stdout + ret.stderr
    assert {r["server"]: r["state"] for r in ret.data["servers"]} == {OTHER: "NEVER"}, ret.data
    assert ret.returncode != 0, "status exits non-zero while a server has never pushed"
