"""Exceptions raised by snap's core.

The Rust core classifies every failure; the binding raises the class of the
same name from this module. Each class also derives from the builtin a caller
would naturally catch (``ValueError`` for bad input, ``OSError`` for the disk,
``ConnectionError`` for the network), so ``except ValueError`` keeps working.
"""


class Error(Exception):
    """Base class of every snap_core error."""


class InvalidInput(Error, ValueError):
    """Malformed input: a minion id, a path, an option, a configuration value."""


class InvalidKey(InvalidInput):
    """A public key that snap will not accept."""


class SecretKeyMaterial(InvalidKey):
    """Secret key material where only public keys belong."""


class AccountCollision(InvalidInput):
    """Two different minion ids would map to the same backup account."""


class AlreadyExists(Error, FileExistsError):
    """Something that must not be overwritten already exists."""


class NotFound(Error, FileNotFoundError):
    """Something that must exist does not."""


class DiskFull(Error, OSError):
    """The disk (or a quota) is full."""


class IOFailure(Error, OSError):
    """A local I/O failure other than a full disk."""


class NetworkError(Error, ConnectionError):
    """The network failed: refused, reset, timed out or dropped mid-transfer."""


class Refused(Error, PermissionError):
    """The remote side understood the request and refused it."""


class IntegrityError(Error):
    """Data failed an integrity check (checksum, MDC, truncation)."""


class Busy(Error, BlockingIOError):
    """Another run holds the lock."""


class NotReady(Error):
    """Off-site data is not readable yet (archived storage class, retrieval pending)."""


class Interrupted(Error, InterruptedError):
    """The operation was interrupted."""


class InternalError(Error, RuntimeError):
    """A bug in snap; the message says where."""


__all__ = [name for name, value in globals().items() if isinstance(value, type) and issubclass(value, Error)]
