"""
snap states: thin wrappers over the ``snap`` execution module.

Every state honours ``test=True`` and reports ``changes`` truthfully; applying
one twice changes nothing the second time.

.. code-block:: yaml

    snap-key:
      snap.keypair:
        - name: /etc/snap/id_ed25519
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "snap"


def __virtual__():
    if "snap.pubkey" not in __salt__:
        return (
            False,
            "snap: the snap execution module is not loaded (the snap_core package is missing; "
            "apply state snap.core first)",
        )
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def keypair(name, comment=None):
    """
    Ensure this server's snap SSH key pair exists: an Ed25519 private key at
    ``name`` (mode 0600) and its public key at ``name.pub``.

    An existing key is never replaced. A private key with a lost ``.pub`` gets
    its public half written again; a ``.pub`` without its private key, or one
    that does not match it, is an error for an operator to resolve.

    name
        Path of the private key, e.g. ``/etc/snap/id_ed25519``. Its directory
        must exist.

    comment
        Comment of a newly generated key (default ``snap@<minion id>``).

    .. code-block:: yaml

        /etc/snap/id_ed25519:
          snap.keypair
    """
    ret = _ret(name)
    try:
        status = __salt__["snap.key_status"](name)
    except Exception as exc:  # pylint: disable=broad-except
        ret.update(result=False, comment=f"Cannot inspect {name}: {exc}")
        return ret
    if status["error"]:
        ret.update(result=False, comment=f"Key {name} is unusable: {status['error']}")
        return ret

    if not status["private"] and status["public"]:
        ret.update(
            result=False,
            comment=(
                f"{name}.pub exists without its private key {name}; restore the private key "
                "or remove the stale public key (snap never overwrites a key)"
            ),
        )
        return ret
    if status["private"] and status["public"] and not status["matches"]:
        ret.update(
            result=False,
            comment=f"{name}.pub does not match the private key {name}; refusing to guess which is right",
        )
        return ret

    changes = {}
    if not status["private"]:
        if __opts__["test"]:
            ret.update(
                result=None,
                comment=f"Ed25519 key pair would be generated at {name}",
                changes={"generated": {"old": None, "new": name}},
            )
            return ret
        try:
            fingerprint = __salt__["snap.generate_keypair"](name, comment=comment)
        except CommandExecutionError as exc:
            ret.update(result=False, comment=f"Cannot generate key {name}: {exc}")
            return ret
        ret.update(
            comment=f"Generated Ed25519 key pair {name} ({fingerprint})",
            changes={"generated": {"old": None, "new": name}, "fingerprint": {"old": None, "new": fingerprint}},
        )
        return ret

    if status["private_mode"] != "0600":
        changes["mode"] = {"old": status["private_mode"], "new": "0600"}
    if not status["public"]:
        changes["public"] = {"old": None, "new": f"{name}.pub"}

    if not changes:
        ret["comment"] = f"Key pair {name} is in place ({status['fingerprint']})"
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment=f"Key pair {name} would be repaired")
        return ret
    try:
        if "mode" in changes:
            __salt__["file.set_mode"](name, "0600")
        if "public" in changes:
            __salt__["snap.restore_public"](name)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=f"Cannot repair key pair {name}: {exc}")
        return ret
    ret.update(changes=changes, comment=f"Repaired key pair {name} ({status['fingerprint']})")
    return ret
