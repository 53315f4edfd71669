"""The wheel carries the core, the bundled libraries and every loader module.

The repository keeps ``_modules/`` and its siblings at the top level; the
package ``snap_core.saltext`` holds one symlink per module file, which maturin
packs as a file (it skips a symlinked directory). The built wheel is listed,
not trusted."""

import os
import re
import subprocess
import zipfile

import tomllib

from tests.conftest import REPO
from tests.support.wheel import release

KINDS = ("modules", "states", "runners", "pillar", "beacons")


def test_every_loader_module_file_has_its_link_in_the_package():
    missing = []
    for kind in KINDS:
        for src in sorted((REPO / f"_{kind}").glob("*.py")):
            link = REPO / "python" / "snap_core" / "saltext" / kind / src.name
            if not (link.is_symlink() and link.resolve() == src.resolve()):
                missing.append(f"ln -s ../../../../_{kind}/{src.name} {link.relative_to(REPO)}")
    assert not missing, "run `make saltext-links` (or these) and commit the links:\n" + "\n".join(missing)


def test_the_salt_loader_entry_point_names_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["salt.loader"] == {"snap": "snap_core.saltext"}


def test_the_wheel_holds_the_modules_the_libraries_and_their_licenses():
    wheel, sums = release()
    assert re.fullmatch(r"snap_backup-[^-]+-cp39-abi3-manylinux_2_34_x86_64\.whl", wheel.name), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in KINDS:
        for src in (REPO / f"_{kind}").glob("*.py"):
            member = f"snap_core/saltext/{kind}/{src.name}"
            assert member in names, member
            assert zipfile.ZipFile(wheel).read(member) == src.read_bytes(), f"{member} differs from {src}"
    libs = {n.split("/")[1].split("-")[0] for n in names if n.startswith("snap_backup.libs/")}
    assert libs == {"libsquashfs", "liblz4", "libzstd", "liblzma"}, libs
    assert "snap_core/licenses/LGPL-3.0.txt" in names and "snap_core/licenses/libsquashfs1.copyright" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "[salt.loader]\nsnap=snap_core.saltext" in zipfile.ZipFile(wheel).read(entry_points).decode()
    listed = subprocess.run(["sha256sum", "-c", sums.name], cwd=sums.parent, capture_output=True, text=True)
    assert listed.returncode == 0 and f"{wheel.name}: OK" in listed.stdout, listed.stdout + listed.stderr


def test_the_core_links_no_system_libsquashfs():
    """The extension needs only glibc and libgcc from the system; every other
    library comes from the wheel (RPATH $ORIGIN/../snap_backup.libs)."""
    wheel, _ = release()
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("snap_core/_rust.abi3.so")
    path = REPO / "dist" / ".probe-rust.so"
    try:
        path.write_bytes(data)
        dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    system = {n for n in needed if not re.fullmatch(r"lib\w+-[0-9a-f]{8}\.so\.\d+", n)}
    assert system <= {
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "ld-linux-x86-64.so.2",
    }, system
    assert "$ORIGIN/../snap_backup.libs" in dynamic
