"""snap_core: the Rust core of snap, exposed to Python.

Everything here is implemented in Rust (``snap_core._rust``); this package
only re-exports it next to the exception classes in :mod:`snap_core.errors`.
"""

from snap_core import errors
from snap_core._rust import *  # noqa: F401,F403
from snap_core._rust import __version__
from snap_core.errors import *  # noqa: F401,F403

__all__ = [name for name in dir() if not name.startswith("_")] + ["__version__"]
