"""Whether the backup server archives incremental chains.

Pillar ``snap:archive:chain:enabled``: ``True`` or ``False``, or ``None``
(the default): chains for an S3 target, whose Object Lock can hold them, and
full archives for a Glacier vault, which cannot read a lock back per object
(``rust/snap-archive/src/chain/run.rs`` refuses a chain there). Read by the
archive run on the backup server (:mod:`snap_core.mod_archive`) and by
``salt-run snap.provision`` on the master, which raises the bucket policy's
cap on retention to cover a chain's life: both must decide alike.
"""

from collections.abc import Mapping

#: ``snap:archive:target:kind`` values that name a Glacier vault (as the core parses them).
VAULT_KINDS = frozenset({"glacier", "glacier-vault", "vault"})


def chains_enabled(archive: Mapping | None) -> bool:
    """``snap:archive`` (pillar, defaults merged or not) → whether runs make chains.

    >>> chains_enabled({})
    True
    >>> chains_enabled({"target": {"kind": "glacier", "vault": "v"}})
    False
    >>> chains_enabled({"chain": {"enabled": False}})
    False
    """
    archive = archive or {}
    chain = archive.get("chain") or {}
    if not isinstance(chain, Mapping):
        raise ValueError(f"pillar snap:archive:chain must be a mapping, not {chain!r}")
    enabled = chain.get("enabled")
    if isinstance(enabled, bool):
        return enabled
    if enabled is not None:
        raise ValueError(
            f"pillar snap:archive:chain:enabled must be True, False or null (chains unless the target "
            f"is a Glacier vault), not {enabled!r}"
        )
    target = archive.get("target") or {}
    kind = target.get("kind") if isinstance(target, Mapping) else None
    return str(kind or "s3").strip().lower() not in VAULT_KINDS
