"""Type stubs for the Rust extension module snap_core._rust."""

__version__: str
