"""Import snap's Salt loader modules as plain Python modules for unit tests."""

import importlib.util

from tests.conftest import REPO


def load(kind, name="snap"):
    """Import ``_<kind>/<name>.py`` (e.g. kind="pillar") under a unique module name."""
    path = REPO / f"_{kind}" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"snap_test_{kind}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
