"""The steps of each operation kind, carried out by a worker: claim, run the steps, record, finish.

Every step is idempotent: it first looks at Azure and, when its effect is already there, records
"Already done" and sends nothing. That is what makes a task safe to deliver twice, a worker safe to kill
and an operation safe to resume. Each step becomes an `OperationStep` row and an `operation.step` audit
event. No database transaction stays open across an Azure call: each row update is its own statement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from encryption import audit, diagnosis, preflight, reasons, sync
from encryption import azure_gateway as gw
from encryption.key_uri import parse_key_uri
from encryption.models import KEY_SOURCE_KEY_VAULT, Account, KeyVault, Operation, OperationStep
from encryption.services import actor_of, snapshot

log = logging.getLogger(__name__)

Kind = Operation.Kind
KEY_PERMISSIONS = frozenset({"get", "wrapkey", "unwrapkey"})


class StepFailed(Exception):
    """A step that stops the operation, with a reason a person can act on."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Done:
    """What a step did; `already` means its effect was there before and nothing was sent."""

    detail: str = ""
    already: bool = False


def already(detail: str) -> Done:
    return Done(detail=detail, already=True)


# The entry point


def run_operation(operation_id: int) -> None:
    """Carry out one operation; safe to call twice. A transient Azure error releases it and propagates."""
    operation = Operation.objects.filter(pk=operation_id).first()
    if operation is None or operation.is_finished or not operation.claim():
        return  # gone, finished, or another worker holds a live lease on it
    _close_interrupted_steps(operation)
    if operation.deliveries > settings.OPERATION_MAX_DELIVERIES:
        _end(operation, succeeded=False, reason=_too_many_deliveries(operation), error_code="TooManyDeliveries")
        return
    runner = Runner(operation)
    try:
        HANDLERS[operation.kind](runner)
    except gw.TransientAzureError:
        operation.release()  # the task's retry policy decides when it runs again
        raise
    except gw.PermanentAzureError as exc:
        runner.fail(reasons.explain(exc), exc.code)
    except StepFailed as exc:
        runner.fail(exc.reason, exc.code)
    except SoftTimeLimitExceeded:
        limit = settings.CELERY_TASK_SOFT_TIME_LIMIT
        reason = f"The operation ran past the worker's time limit ({limit}s); refresh the account, then try again."
        runner.fail(reason, "TimeLimit")
    except Exception:
        # A bug must not leave the row running for the sweeper to resend into the same bug forever.
        log.exception("operation %s stopped on an unexpected error", operation.pk)
        runner.fail("Keyward stopped on an unexpected error (details are in the worker's log).", "InternalError")
    else:
        runner.succeed()


def give_up(operation_id: int, error: gw.AzureError) -> None:
    """Past the task's retries: fail the operation with a reason rather than leave it queued."""
    operation = Operation.objects.get(pk=operation_id)
    attempts = settings.OPERATION_MAX_RETRIES + 1
    _end(operation, succeeded=False, reason=reasons.transient_gave_up(error, attempts), error_code=error.code)


def fail_abandoned(operation: Operation) -> bool:
    """The sweeper's verdict on a row whose workers died too often; True if it ended it."""
    _close_interrupted_steps(operation)
    return _end(operation, succeeded=False, reason=_too_many_deliveries(operation), error_code="TooManyDeliveries")


def _too_many_deliveries(operation: Operation) -> str:
    return (
        f"The worker carrying this operation out stopped {operation.deliveries} times without finishing, so "
        "Keyward gave up. Check the account's state (refresh it) before trying again."
    )


def _close_interrupted_steps(operation: Operation) -> None:
    operation.steps.filter(status=OperationStep.Status.RUNNING).update(
        status=OperationStep.Status.FAILED,
        detail="Interrupted: the worker stopped before this step ended; it is checked again on resume.",
        finished_at=timezone.now(),
    )


def _end(operation: Operation, *, succeeded: bool, reason: str = "", error_code: str = "", **fields: Any) -> bool:
    """Finish the row and write its outcome event together; False if it had already ended."""
    if operation.account_id is not None and "state_after" not in fields:
        fields["state_after"] = snapshot(Account.objects.get(pk=operation.account_id))
    with transaction.atomic():
        if not operation.finish(succeeded=succeeded, reason=reason, error_code=error_code, **fields):
            return False
        audit.record(
            actor=actor_of(operation),
            action="operation.succeeded" if succeeded else "operation.failed",
            outcome="succeeded" if succeeded else "failed",
            target=operation.account.arm_id if operation.account else "",
            key_id=_key_id(operation),
            operation=operation,
            before=operation.state_before,
            after=operation.state_after,
            request_ids=operation.request_ids,
            message=f"{operation.get_kind_display()} succeeded." if succeeded else reason,
        )
    return True


def _key_id(operation: Operation) -> str:
    params = operation.params
    if params.get("key_uri"):
        return str(params["key_uri"])
    if params.get("vault_uri"):
        return f"{str(params['vault_uri']).rstrip('/')}/keys/{params.get('key_name', '')}"
    account = operation.account
    return account.key_uri if account is not None else ""


# The step runner


class Runner:
    """Runs the steps of one claimed operation and keeps its record (steps, request ids, LRO token)."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.actor = actor_of(operation)
        self.request_ids: list[str] = list(operation.request_ids or [])
        self.result: dict[str, Any] = dict(operation.result or {})

    @property
    def account(self) -> Account:
        if self.operation.account is None:
            raise StepFailed("This operation needs an account.")
        return self.operation.account

    def step(self, name: str, label: str, action: Callable[[], Done]) -> Done:
        self.operation.extend_lease()
        row = OperationStep.objects.create(operation=self.operation, name=name, label=label)
        started = time.monotonic()
        with gw.collect_request_ids() as ids:
            try:
                done = action()
            except gw.AzureError as exc:
                detail = reasons.explain(exc)
                if isinstance(exc, gw.TransientAzureError):
                    detail = f"Temporary Azure error, will retry: {detail}"
                self._close(row, OperationStep.Status.FAILED, detail, list(ids), started, exc.code)
                raise
            except StepFailed as exc:
                self._close(row, OperationStep.Status.FAILED, exc.reason, list(ids), started, exc.code)
                raise
            except Exception:
                self._close(row, OperationStep.Status.FAILED, "Unexpected error.", list(ids), started, "InternalError")
                raise
        status = OperationStep.Status.SKIPPED if done.already else OperationStep.Status.SUCCEEDED
        self._close(row, status, done.detail, list(ids), started)
        return done

    def note(self, name: str, label: str, detail: str) -> None:
        """Record a step that had nothing to do."""
        self.step(name, label, lambda: already(detail))

    def _close(
        self, row: OperationStep, status: str, detail: str, ids: list[str], started: float, code: str = ""
    ) -> None:
        row.status = status
        row.detail = detail
        row.error_code = code
        row.request_ids = ids
        row.finished_at = timezone.now()
        row.duration_ms = int((time.monotonic() - started) * 1000)
        row.save(update_fields=["status", "detail", "error_code", "request_ids", "finished_at", "duration_ms"])
        self.request_ids.extend(i for i in ids if i not in self.request_ids)
        Operation.objects.filter(pk=self.operation.pk).update(request_ids=self.request_ids)
        audit.record(
            actor=self.actor,
            action="operation.step",
            outcome="failed" if status == OperationStep.Status.FAILED else "succeeded",
            target=self.operation.account.arm_id if self.operation.account else "",
            key_id=_key_id(self.operation),
            operation=self.operation,
            request_ids=ids,
            message=f"{row.label}: {row.get_status_display()}" + (f". {detail}" if detail else ""),
        )

    # What survives a retry: pinned parameters, the result so far, the LRO token, the PATCH count.

    def pin(self, **params: Any) -> None:
        self.operation.params = {**self.operation.params, **params}
        Operation.objects.filter(pk=self.operation.pk).update(params=self.operation.params)

    def save_result(self, **values: Any) -> None:
        self.result.update(values)
        Operation.objects.filter(pk=self.operation.pk).update(result=self.result)

    def lro_token_for(self, arm_id: str) -> str:
        token = self.operation.lro_token
        return token if token and self.result.get("lro_target") == arm_id else ""

    def on_continuation(self, arm_id: str, resuming: bool) -> Callable[[str], None]:
        """The callback the gateway runs right after it sent a PATCH (before the first poll)."""

        def save(token: str) -> None:
            if resuming:
                self.count_patch()  # the old LRO was gone, so the gateway had to send the PATCH again
            self.save_lro_token(arm_id, token)

        return save

    def save_lro_token(self, arm_id: str, token: str) -> None:
        # Saved before the first poll, so a task retried after a crash resumes polling instead of re-sending.
        self.result["lro_target"] = arm_id
        self.operation.lro_token = token
        Operation.objects.filter(pk=self.operation.pk).update(lro_token=token, result=self.result)

    def clear_lro_token(self) -> None:
        self.result.pop("lro_target", None)
        self.operation.lro_token = ""
        Operation.objects.filter(pk=self.operation.pk).update(lro_token="", result=self.result)

    def count_patch(self) -> None:
        # Counted before the PATCH leaves, so Azure never sees more PATCHes than the row records.
        Operation.objects.filter(pk=self.operation.pk).update(patch_attempts=F("patch_attempts") + 1)

    def succeed(self) -> None:
        _end(self.operation, succeeded=True, request_ids=self.request_ids, result=self.result or None)

    def fail(self, reason: str, code: str = "") -> None:
        if self.operation.is_change and self.operation.account is not None:
            self._refresh_quietly()
        _end(
            self.operation,
            succeeded=False,
            reason=reason,
            error_code=code,
            request_ids=self.request_ids,
            result=self.result or None,
        )

    def _refresh_quietly(self) -> None:
        """After a failed change, show the account as Azure now has it; a failure here changes nothing."""
        try:
            sync.sync_account(self.account)
        except gw.AzureError:
            log.warning("could not refresh %s after a failed operation", self.account.arm_id, exc_info=True)


# Targets


@dataclass(frozen=True)
class Target:
    """A key version an account should use, and where its vault lives."""

    vault_uri: str
    key_name: str
    key_version: str
    vault_subscription_id: str

    @property
    def uri(self) -> str:
        base = f"{self.vault_uri.rstrip('/')}/keys/{self.key_name}"
        return f"{base}/{self.key_version}" if self.key_version else base


def _target_from_uri(key_uri: str, subscription_id: str) -> Target:
    key = parse_key_uri(key_uri)
    return Target(key.vault_uri, key.name, key.version, subscription_id)


def _vault_subscription(vault_uri: str, fallback: str) -> str:
    vault = KeyVault.objects.filter(vault_uri__iexact=vault_uri).select_related("subscription").first()
    return vault.subscription.subscription_id if vault is not None else fallback


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def _uses(info: Any, target: Target) -> bool:
    return bool(
        info.key_source == KEY_SOURCE_KEY_VAULT
        and _same_uri(info.key_vault_uri or "", target.vault_uri)
        and info.key_name == target.key_name
        and (info.key_version or "").lower() == target.key_version.lower()
    )


# Shared steps


def _resolve_version(runner: Runner, target: Target) -> Target:
    """Pin a versionless key to its current version once; a retry keeps the version first pinned."""
    pinned = runner.operation.params.get("key_version", "")
    if target.key_version:
        return target
    if pinned:
        runner.note("resolve_version", "Resolve the key's current version", f"Pinned earlier to {pinned}.")
        return Target(target.vault_uri, target.key_name, pinned, target.vault_subscription_id)

    def resolve() -> Done:
        _find_vault(target)  # over ARM first: a vault that does not exist has no host to ask for its key
        key = gw.get_key(target.vault_uri, target.key_name)
        runner.pin(key_version=key.version)
        return Done(f"The key's current version is {key.version}; the account is pinned to it.")

    runner.step("resolve_version", "Resolve the key's current version", resolve)
    version = runner.operation.params["key_version"]
    return Target(target.vault_uri, target.key_name, version, target.vault_subscription_id)


def _ensure_identity(runner: Runner, arm_id: str) -> None:
    def ensure() -> Done:
        info = gw.get_account(arm_id)
        if info.has_system_identity:
            return already(f"The system-assigned identity is on ({info.principal_id}).")
        runner.count_patch()
        after = gw.enable_system_identity(arm_id)
        return Done(f"Turned on the system-assigned identity ({after.principal_id}); other identities kept.")

    runner.step("enable_identity", "Turn on the account's system-assigned identity", ensure)


def _run_preflight(runner: Runner, arm_id: str, target: Target) -> None:
    def check() -> Done:
        checks = preflight.run_checks(arm_id, key_uri=target.uri, vault_subscription_id=target.vault_subscription_id)
        runner.save_result(checks=[c.as_dict() for c in checks])
        blocking = [c for c in checks if c.state == preflight.BLOCKS]
        if blocking:
            reason = " ".join(f"{c.label}: {c.detail} {c.action}".strip() for c in blocking)
            raise StepFailed(f"A prerequisite is not met. {reason}", blocking[0].id)
        todo = [c.label for c in checks if c.state == preflight.WILL_BE_DONE]
        return Done("Every prerequisite passes" + (f"; this operation will: {', '.join(todo)}." if todo else "."))

    runner.step("preflight", "Check every prerequisite", check)


def _find_vault(target: Target) -> Any:
    vault = gw.find_vault(target.vault_uri, target.vault_subscription_id)
    if vault is None:
        raise StepFailed(
            f"No key vault at {target.vault_uri} in subscription {target.vault_subscription_id}; check the "
            "key URI and the subscription.",
            "KeyVaultNotFound",
        )
    return vault


def _grant_access(runner: Runner, arm_id: str, target: Target) -> None:
    def grant() -> Done:
        info = gw.get_account(arm_id)
        vault = _find_vault(target)
        held = {p.lower() for p in gw.key_access_of(vault, info.principal_id)}
        how = "the role Key Vault Crypto Service Encryption User" if vault.rbac_authorization else "an access policy"
        if held >= KEY_PERMISSIONS:
            return already(f"The identity already has get, wrapKey and unwrapKey on {vault.name}.")
        gw.grant_key_access(vault, info.principal_id)
        return Done(f"Granted the identity get, wrapKey and unwrapKey on {vault.name} through {how}.")

    runner.step("grant_access", "Grant the identity access to the key", grant)


def _write_key(runner: Runner, arm_id: str, target: Target, *, name: str = "set_key", label: str = "") -> None:
    def write() -> Done:
        info = gw.get_account(arm_id)  # re-read right before the write
        if _uses(info, target) and info.provisioning_state in ("Succeeded", ""):
            runner.clear_lro_token()
            return already(f"The account already uses {target.uri}.")
        token = runner.lro_token_for(arm_id)
        if not token:
            runner.count_patch()
        try:
            gw.set_customer_managed_key(
                arm_id,
                vault_uri=target.vault_uri,
                key_name=target.key_name,
                key_version=target.key_version,
                etag=info.etag,  # optimistic concurrency: 412 if the account changed since the re-read
                continuation_token=token,
                on_continuation=runner.on_continuation(arm_id, resuming=bool(token)),
            )
        except gw.PermanentAzureError:
            runner.clear_lro_token()  # the LRO ended; a new attempt must send again
            raise
        runner.clear_lro_token()
        return Done(f"Azure applied {target.uri}" + (" (resumed the pending update)." if token else "."))

    runner.step(name, label or "Set the account's encryption key", write)


def _verify_key(runner: Runner, arm_id: str, target: Target) -> None:
    def verify() -> Done:
        info = gw.get_account(arm_id)
        if not _uses(info, target):
            raise StepFailed(
                f"Azure reports the account still uses {info.key_source} {info.key_name or ''} "
                f"{info.key_version or ''} instead of {target.uri}; refresh it and try again.",
                "NotApplied",
            )
        return Done(f"Azure reports the account uses {target.uri}.")

    runner.step("verify", "Read the account back from Azure", verify)


def _probe(runner: Runner, arm_id: str, *, expect_readable: bool | None) -> None:
    def probe() -> Done:
        result = gw.probe_data_access(arm_id)
        runner.save_result(readable=result.readable, probe_reason=result.reason)
        Account.objects.filter(arm_id=arm_id).update(
            data_readable=result.readable, data_access_reason=result.reason[:300], probed_at=timezone.now()
        )
        if expect_readable and result.readable is False:  # None: Azure has no probe, nothing to hold against
            raise StepFailed(
                f"The change was applied, but the account cannot read its data: {result.reason} "
                "Restore access to the key (or undo the change).",
                result.code or "DataUnreadable",
            )
        state = "readable" if result.readable else "not readable"
        return Done(f"The account's data is {state}" + (f": {result.reason}" if result.reason else "."))

    runner.step("probe", "Probe data access", probe)


def _refresh(runner: Runner, account: Account, *, key_target: Target | None = None, mmk: bool = False) -> None:
    """Re-read the account into the mirror; after a key was set, remember its vault's tenant (a later
    mismatch means the subscription moved tenants), and forget it once Microsoft manages the key again."""

    def refresh() -> Done:
        sync.sync_account(account)
        if key_target is not None or mmk:
            tenant_id = _find_vault(key_target).tenant_id if key_target is not None else ""
            Account.objects.filter(pk=account.pk).update(cmk_tenant_id=tenant_id)
        return Done("Keyward's view of the account now matches Azure.")

    runner.step("refresh", "Refresh Keyward's view of the account", refresh)


def _set_key(runner: Runner, account: Account, target: Target) -> None:
    """The whole of putting an account on a key version: checks, identity, access, PATCH, read-back, probe.

    The checks run before anything is changed: an identity that is off or access not yet granted is a
    "will be done" check, not a blocking one, so a blocked operation leaves the account exactly as it was.
    """
    target = _resolve_version(runner, target)
    _run_preflight(runner, account.arm_id, target)
    _ensure_identity(runner, account.arm_id)
    _grant_access(runner, account.arm_id, target)
    _write_key(runner, account.arm_id, target)
    _verify_key(runner, account.arm_id, target)
    _probe(runner, account.arm_id, expect_readable=True)
    runner.save_result(key_uri=target.uri)
    _refresh(runner, account, key_target=target)


# Kinds that change Azure


def enable_cmk(runner: Runner) -> None:
    params = runner.operation.params
    _set_key(runner, runner.account, _target_from_uri(params["key_uri"], params["vault_subscription_id"]))


def change_key(runner: Runner) -> None:
    enable_cmk(runner)  # another key, in this vault or another: the same full path, checks and grant included


def update_version(runner: Runner) -> None:
    account = runner.account
    vault_sub = _vault_subscription(account.key_vault_uri, account.subscription.subscription_id)
    target = Target(account.key_vault_uri, account.key_name, runner.operation.params["version"], vault_sub)
    _set_key(runner, account, target)


def rotate_key(runner: Runner) -> None:
    params = runner.operation.params
    vault_uri, key_name = params["vault_uri"], params["key_name"]
    new_version = _rotate(runner, vault_uri, key_name)
    if not params.get("update_accounts"):
        return
    vault_sub = _vault_subscription(vault_uri, "")
    for account in _accounts_on_key(runner, vault_uri, key_name):
        target = Target(vault_uri, key_name, new_version, vault_sub or account.subscription.subscription_id)
        _move_to_version(runner, account, target)


def _rotate(runner: Runner, vault_uri: str, key_name: str) -> str:
    """Rotate once: the version before is recorded first, so a retry after a lost answer sees it happened."""

    def rotate() -> Done:
        if runner.result.get("new_version"):
            return already(f"Rotated earlier in this operation: new version {runner.result['new_version']}.")
        current = gw.get_key(vault_uri, key_name).version
        before = runner.result.setdefault("version_before", current)
        if current != before:
            runner.save_result(new_version=current)
            return already(f"The key was already rotated by this operation: new version {current}.")
        runner.save_result(version_before=before)
        rotated = gw.rotate_key(vault_uri, key_name)
        runner.save_result(new_version=rotated.version)
        return Done(f"Created version {rotated.version} of {key_name} (was {before}).")

    runner.step("rotate", "Rotate the key in Key Vault", rotate)
    return str(runner.result["new_version"])


def _accounts_on_key(runner: Runner, vault_uri: str, key_name: str) -> Iterator[Account]:
    """Accounts on the key in the mirror (the one it was started from first); busy ones are skipped."""
    accounts = list(
        Account.objects.filter(key_source=KEY_SOURCE_KEY_VAULT, key_vault_uri__iexact=vault_uri, key_name=key_name)
    )
    if runner.operation.account is not None and runner.operation.account not in accounts:
        accounts.insert(0, runner.operation.account)
    for account in accounts:
        busy = (
            Operation.objects.filter(account=account, kind__in=Operation.CHANGE_KINDS, status__in=["queued", "running"])
            .exclude(pk=runner.operation.pk)
            .first()
        )
        if busy is not None:
            detail = f"Skipped: {busy} is in progress on this account; update it afterwards."
            runner.note(f"skip:{account.name}"[:60], f"Move {account.name} to the new version", detail)
            continue
        yield account


def _move_to_version(runner: Runner, account: Account, target: Target) -> None:
    arm_id = account.arm_id
    _run_preflight(runner, arm_id, target)
    _write_key(
        runner, arm_id, target, name=f"set_key:{account.name}"[:60], label=f"Move {account.name} to the new version"
    )
    _verify_key(runner, arm_id, target)
    _probe(runner, arm_id, expect_readable=True)
    _refresh(runner, account)


def revoke_access(runner: Runner) -> None:
    account = runner.account
    if runner.operation.params.get("method") == "disable_key":
        _disable_key(runner, account)
    else:
        _remove_access(runner, account)
    _probe(runner, account.arm_id, expect_readable=False)
    _refresh(runner, account)


def _remove_access(runner: Runner, account: Account) -> None:
    def remove() -> Done:
        info = gw.get_account(account.arm_id)
        if not info.principal_id:
            return already("The account has no identity, so it holds no access to remove.")
        target = _current_target(info, account)
        vault = _find_vault(target)
        held = {p.lower() for p in gw.key_access_of(vault, info.principal_id)}
        if not held & KEY_PERMISSIONS:
            return already(f"The identity holds no key access on {vault.name}.")
        gw.revoke_key_access(vault, info.principal_id)
        how = "role assignment" if vault.rbac_authorization else "access policy"
        return Done(f"Removed the identity's {how} on {vault.name}.")

    runner.step("remove_access", "Remove the identity's access to the key", remove)


def _disable_key(runner: Runner, account: Account) -> None:
    def disable() -> Done:
        info = gw.get_account(account.arm_id)
        target = _current_target(info, account)
        key = gw.get_key(target.vault_uri, target.key_name, target.key_version)
        if not key.enabled:
            return already(f"Version {key.version} of {target.key_name} is already disabled.")
        gw.set_key_enabled(target.vault_uri, target.key_name, key.version, enabled=False)
        return Done(f"Disabled version {key.version} of {target.key_name}.")

    runner.step("disable_key", "Disable the key version", disable)


def _current_target(info: Any, account: Account) -> Target:
    if info.key_source != KEY_SOURCE_KEY_VAULT:
        raise StepFailed(f"{account.name} uses Microsoft-managed keys in Azure; there is no key to act on.", "NotCmk")
    sub = _vault_subscription(info.key_vault_uri, account.subscription.subscription_id)
    return Target(info.key_vault_uri, info.key_name, info.key_version or "", sub)


def restore_access(runner: Runner) -> None:
    """Undo a revoke whatever its form: identity, soft-deleted key, disabled version, missing access."""
    account = runner.account
    found: list[Target] = []

    def read() -> Done:
        found.append(_current_target(gw.get_account(account.arm_id), account))
        return Done(f"The account uses {found[0].uri}.")

    runner.step("read_account", "Read the account's key from Azure", read)
    target = found[0]
    _ensure_identity(runner, account.arm_id)
    _recover_key(runner, target)
    _enable_key(runner, target)
    _grant_access(runner, account.arm_id, target)
    _probe(runner, account.arm_id, expect_readable=True)
    _refresh(runner, account)


def _recover_key(runner: Runner, target: Target) -> None:
    def recover() -> Done:
        try:
            gw.get_key(target.vault_uri, target.key_name, target.key_version)
            return already(f"The key {target.key_name} exists.")
        except gw.PermanentAzureError as exc:
            if not exc.not_found:
                raise
        if gw.get_deleted_key(target.vault_uri, target.key_name) is None:
            raise StepFailed(
                f"The key {target.key_name} is gone from {target.vault_uri} and not in its soft-deleted keys "
                "(purged); the data it protected cannot be read again. Restore the key from a backup.",
                "KeyPurged",
            )
        gw.recover_deleted_key(target.vault_uri, target.key_name)
        return Done(f"Recovered the soft-deleted key {target.key_name}.")

    runner.step("recover_key", "Recover the key if it was deleted", recover)


def _enable_key(runner: Runner, target: Target) -> None:
    def enable() -> Done:
        key = gw.get_key(target.vault_uri, target.key_name, target.key_version)
        if key.enabled:
            return already(f"Version {key.version} of {target.key_name} is enabled.")
        gw.set_key_enabled(target.vault_uri, target.key_name, key.version, enabled=True)
        return Done(f"Enabled version {key.version} of {target.key_name}.")

    runner.step("enable_key", "Enable the key version", enable)


def disable_cmk(runner: Runner) -> None:
    account = runner.account
    arm_id = account.arm_id

    def write() -> Done:
        info = gw.get_account(arm_id)  # re-read right before the write
        if info.key_source != KEY_SOURCE_KEY_VAULT and info.provisioning_state in ("Succeeded", ""):
            runner.clear_lro_token()
            return already("The account already uses Microsoft-managed keys.")
        token = runner.lro_token_for(arm_id)
        if not token:
            runner.count_patch()
        try:
            gw.set_microsoft_managed_key(
                arm_id,
                etag=info.etag,
                continuation_token=token,
                on_continuation=runner.on_continuation(arm_id, resuming=bool(token)),
            )
        except gw.PermanentAzureError:
            runner.clear_lro_token()
            raise
        runner.clear_lro_token()
        return Done("Azure switched the account to Microsoft-managed keys; its identity stays on.")

    def verify() -> Done:
        info = gw.get_account(arm_id)
        if info.key_source == KEY_SOURCE_KEY_VAULT:
            raise StepFailed("Azure reports the account still uses customer-managed keys; try again.", "NotApplied")
        return Done("Azure reports Microsoft-managed keys.")

    runner.step("set_microsoft_key", "Switch to Microsoft-managed keys", write)
    runner.step("verify", "Read the account back from Azure", verify)
    _probe(runner, arm_id, expect_readable=True)
    _refresh(runner, account, mmk=True)


# Read-only jobs


def sync_job(runner: Runner) -> None:
    def run() -> Done:
        if runner.operation.account is not None:
            sync.sync_account(runner.operation.account)
            return Done("Read the account from Azure.")
        summary = sync.sync_estate()
        return Done(str(summary) if summary else "Read the estate from Azure.")

    runner.step("sync", "Read the estate from Azure", run)


def refresh_job(runner: Runner) -> None:
    _refresh(runner, runner.account)


def preflight_job(runner: Runner) -> None:
    def run() -> Done:
        params = runner.operation.params
        checks = preflight.run_checks(
            runner.account.arm_id, key_uri=params["key_uri"], vault_subscription_id=params["vault_subscription_id"]
        )
        runner.save_result(checks=[c.as_dict() for c in checks])
        blocking = sum(1 for c in checks if c.state == preflight.BLOCKS)
        return Done(f"{len(checks)} checks, {blocking} blocking.")

    runner.step("preflight", "Check every prerequisite", run)


def diagnose_job(runner: Runner) -> None:
    def run() -> Done:
        found = diagnosis.diagnose(runner.account)
        runner.save_result(**found.as_dict())
        return Done("Readable." if found.readable else f"{len(found.causes)} cause(s) found.")

    runner.step("diagnose", "Diagnose data access", run)


HANDLERS: dict[str, Callable[[Runner], None]] = {
    Kind.ENABLE_CMK: enable_cmk,
    Kind.UPDATE_VERSION: update_version,
    Kind.CHANGE_KEY: change_key,
    Kind.ROTATE_KEY: rotate_key,
    Kind.REVOKE_ACCESS: revoke_access,
    Kind.RESTORE_ACCESS: restore_access,
    Kind.DISABLE_CMK: disable_cmk,
    Kind.SYNC: sync_job,
    Kind.REFRESH: refresh_job,
    Kind.PREFLIGHT: preflight_job,
    Kind.DIAGNOSE: diagnose_job,
}
