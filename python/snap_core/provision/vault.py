"""Glacier vaults (accounts that still have them): the access policy and
the vault lock's initiate, verify and complete steps."""

from __future__ import annotations

import json

from snap_core.provision.aws import _code
from snap_core.provision.compare import _read_json_policy, policy_weakening, same
from snap_core.provision.policies import vault_access_policy, vault_lock_policy
from snap_core.provision.spec import CONFIRM_PHRASE, ProvisionError


class VaultSteps:
    """The vault part of :class:`~snap_core.provision.plan.Provisioner`."""

    def _plan_vault(self):
        g, spec = self.aws.glacier, self.spec
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            g.describe_vault(accountId="-", vaultName=spec.bucket)
        except ClientError as exc:
            raise ProvisionError(
                f"vault {spec.bucket}: {exc}. snap only configures existing vaults (Glacier takes no new "
                "customers); use kind s3 otherwise"
            ) from exc
        desired = vault_access_policy(spec)
        try:
            current = _read_json_policy(
                g.get_vault_access_policy(accountId="-", vaultName=spec.bucket)["policy"]["Policy"]
            )
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            current = None
        if not same(current, desired):
            weaker = policy_weakening(current, desired) if current else []
            if weaker:
                self.refused.append(f"vault-access-policy: would weaken the existing policy: {'; '.join(weaker)}")
            else:
                self._step(
                    "vault-access-policy",
                    "SetVaultAccessPolicy",
                    current,
                    desired,
                    False,
                    lambda: g.set_vault_access_policy(
                        accountId="-", vaultName=spec.bucket, policy={"Policy": json.dumps(desired)}
                    ),
                )
        self._plan_identity()
        if spec.vault_lock:
            self._plan_vault_lock()

    def _plan_vault_lock(self):
        """Initiate -> (24 hours to test) -> verify -> complete, the last only
        with the confirmation phrase and the lock id that initiate printed."""
        g, spec = self.aws.glacier, self.spec
        from botocore.exceptions import ClientError  # noqa: PLC0415

        desired = vault_lock_policy(spec)
        try:
            lock = g.get_vault_lock(accountId="-", vaultName=spec.bucket)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            lock = None
        state = (lock or {}).get("State")
        current = _read_json_policy((lock or {}).get("Policy"))
        if state == "Locked":
            # Weaker: putting the completed policy in place of the one asked for would weaken it.
            weaker = policy_weakening(desired, current)
            if not same(current, desired):
                if not weaker:
                    self.notes.append("the vault lock is complete and at least as strict as retain_days asks")
                else:
                    self.problems.append(
                        f"the vault lock is complete and weaker than asked ({'; '.join(weaker)}); a completed lock "
                        "never changes: use a new vault for a longer retention"
                    )
            return
        if state == "InProgress" and same(current, desired):
            if spec.vault_lock_complete_id and spec.confirmed:
                lock_id = spec.vault_lock_complete_id
                self._step(
                    "vault-lock",
                    "CompleteVaultLock",
                    "InProgress",
                    {"lockId": lock_id, "policy": desired},
                    True,
                    lambda: g.complete_vault_lock(accountId="-", vaultName=spec.bucket, lockId=lock_id),
                )
            else:
                self.notes.append(
                    "the vault lock is in progress with the right policy (it expires 24 hours after it was "
                    "initiated): test it, then set snap:offsite:vault_lock:complete_lock_id to the lock id that "
                    f"initiate printed, and snap:offsite:confirm_irreversible to {CONFIRM_PHRASE!r}, to complete it"
                )
            return
        if state == "InProgress":
            self._step(
                "vault-lock-abort",
                "AbortVaultLock (the lock in progress has another policy)",
                current,
                None,
                False,
                lambda: g.abort_vault_lock(accountId="-", vaultName=spec.bucket),
            )
        self._step(
            "vault-lock",
            "InitiateVaultLock (24 hours to test it; reversible until completed)",
            current,
            desired,
            False,
            lambda: self._initiate_vault_lock(desired),
        )

    def _initiate_vault_lock(self, desired):
        out = self.aws.glacier.initiate_vault_lock(
            accountId="-", vaultName=self.spec.bucket, policy={"Policy": json.dumps(desired)}
        )
        self.notes.append(
            f"vault lock initiated, lock id {out['lockId']}: complete it within 24 hours by setting "
            f"snap:offsite:vault_lock:complete_lock_id: {out['lockId']} (and the confirmation phrase), or let it expire"
        )
        return out
