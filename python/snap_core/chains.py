"""Whether the backup server archives incremental chains.

Pillar ``snap:archive:chain:enabled``: ``True`` or ``False``, or ``None``
(the default): chains for an S3 target, whose Object Lock can hold them, and
full archives for a Glacier vault, which cannot read a lock back per object
(``rust/snap-archive/src/chain/run.rs`` refuses a chain there). Read by the
archive run on the backup server (:mod:`snap_core.mod_archive`) and, for the
bucket policy's cap on retention (which must leave a chain room exactly
when runs make chains), by ``salt-run snap.provision``, the
``snap.offsite_present`` state and ``snap-backup offsite-template`` /
``verify-offsite``: all decide with :func:`chains_enabled`.
"""

from collections.abc import Mapping

#: ``snap:archive:target:kind`` values that name a Glacier vault, as the core
#: parses them (ASCII case-insensitive, nothing trimmed).
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
    if archive is None:
        archive = {}
    if not isinstance(archive, Mapping):
        raise ValueError(f"pillar snap:archive must be a mapping, not {archive!r}")
    chain = archive.get("chain")
    if chain is None:
        chain = {}
    if not isinstance(chain, Mapping):
        # `chain: False` must not read as "no settings", which means chains.
        raise ValueError(f"pillar snap:archive:chain must be a mapping (e.g. {{enabled: False}}), not {chain!r}")
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
    return str(kind or "s3").lower() not in VAULT_KINDS


def provisioning_chains(settings: dict, archive: Mapping | None, where: str) -> list[str]:
    """Set ``settings["chains"]`` (the snap:offsite settings provisioning reads)
    from ``archive`` unless it is set already; the notes to show. Without
    an ``archive`` (the pillar read has no ``snap:archive``) the default
    holds, and a note says so: the backup server's own pillar may say
    otherwise. Raises ``ValueError`` on a bad setting."""
    if "chains" in settings:
        return []
    settings["chains"] = chains_enabled(archive)
    if archive is None and settings["chains"]:
        return [
            f"{where} has no snap:archive: chains assumed (the default for an S3 target), so the cap on "
            "retention leaves room for them; if the backup server sets snap:archive:chain:enabled: False, "
            "provision from its pillar (salt-run snap.provision minion=<backup server>) for the narrower cap"
        ]
    return []
