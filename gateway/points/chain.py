"""Chains of hooks on one blocking point: each answer folded in by the point's rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .answers import (
    MAX_CLAIMS_BYTES,
    PASS_THROUGH_ERRORS,
    Answer,
    AnswerError,
    _json_size,
    error_envelope,
    filter_credentials_exchange,
    filter_pre_user_registration,
    server_error,
    success_envelope,
)
from .triggers import CREDENTIALS_EXCHANGE, PRE_USER_REGISTRATION, get_trigger

# --- chains of hooks on one blocking point -------------------------------------------------------


class Chain:
    """Folds the answers of the hooks of one blocking invocation, in order.

    credentials-exchange: each hook is sent the event with `scope` as the previous hook left it;
    an answer without `scope` resets it to `[]`; claims merge, later wins.
    pre-user-registration: `user_metadata` and `app_metadata` merge per top-level key, later wins.
    send-phone-message: success data passes through (merged, later wins).
    The first error stops the chain: a pass-through name keeps its envelope, any other name
    becomes a `ServerError` naming the hook. If no hook succeeded (none enabled, or all skipped
    by their failure policy) the result is the neutral answer.
    """

    def __init__(self, trigger_id: str, event: Mapping[str, Any]) -> None:
        if not get_trigger(trigger_id).blocking:
            raise ValueError(f"{trigger_id!r} is not a blocking point")
        self.trigger_id = trigger_id
        self.event: dict[str, Any] = dict(event)
        scope = event.get("scope")
        self.scope: list[str] = list(scope) if isinstance(scope, list) else []
        self.claims: dict[str, Any] = {}
        self.user_metadata: dict[str, Any] = {}
        self.app_metadata: dict[str, Any] = {}
        self.data: dict[str, Any] = {}
        self.dropped: list[str] = []  # claim names dropped so far, for the invocation's log
        self.applied = 0  # successful answers folded in
        self._stopped: dict[str, Any] | None = None

    @classmethod
    def start(cls, trigger_id: str, event: Mapping[str, Any]) -> Chain:
        return cls(trigger_id, event)

    @property
    def done(self) -> bool:
        """Whether an error stopped the chain (the remaining hooks are not called)."""
        return self._stopped is not None

    def next_request(self) -> dict[str, Any]:
        """The body the next hook is sent."""
        if self.trigger_id == CREDENTIALS_EXCHANGE:
            return {**self.event, "scope": list(self.scope)}
        return dict(self.event)

    def apply(self, answer: Answer, *, hook_name: str) -> None:
        """Fold one hook's answer in. `AnswerError` (state unchanged) if its data is malformed."""
        if self._stopped is not None:
            raise RuntimeError("the chain was stopped by an error")
        if not answer.ok:
            name = answer.error_name or ""
            message = answer.error_message or ""
            if name in PASS_THROUGH_ERRORS[self.trigger_id]:
                self._stopped = error_envelope(name, message, answer.friendly_message)
            else:
                reason = f"answered {name}: {message}" if message else f"answered {name}"
                self._stopped = server_error(hook_name, reason)
            return
        if self.trigger_id == CREDENTIALS_EXCHANGE:
            kept, dropped = filter_credentials_exchange(answer.data)
            scope = kept.pop("scope", [])  # a missing scope resets the scopes (Auth0's rule)
            merged = {**self.claims, **kept}
            size = _json_size(merged)
            if size > MAX_CLAIMS_BYTES:  # each answer fits, but the chain's claims together do not
                raise AnswerError(
                    f"custom claims of the chain are {size} bytes, over the limit of {MAX_CLAIMS_BYTES}"
                )
            self.scope = scope
            self.claims = merged
            self.dropped.extend(dropped)
        elif self.trigger_id == PRE_USER_REGISTRATION:
            user = filter_pre_user_registration(answer.data)["user"]
            self.user_metadata.update(user["user_metadata"])
            self.app_metadata.update(user["app_metadata"])
        else:
            self.data.update(answer.data)
        self.applied += 1

    def fail(self, hook_name: str, reason: str) -> None:
        """Stop with a `ServerError` (a hook failed and its failure policy is `fail`)."""
        if self._stopped is None:
            self._stopped = server_error(hook_name, reason)

    def result(self) -> dict[str, Any]:
        """The envelope the auth server gets. It shares the chain's objects: a chain is used for
        one invocation and dropped, so copying them would only cost time on the hot path."""
        if self._stopped is not None:
            return self._stopped
        if self.trigger_id == CREDENTIALS_EXCHANGE:
            return success_envelope({"scope": list(self.scope), **self.claims})
        if self.trigger_id == PRE_USER_REGISTRATION:
            return success_envelope(
                {"user": {"user_metadata": self.user_metadata, "app_metadata": self.app_metadata}}
            )
        if self.applied == 0:
            return error_envelope("SendPhoneMessageError", "no hook configured")
        return success_envelope(self.data)


def neutral_answer(trigger_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The answer of a blocking point with no enabled hook."""
    return Chain(trigger_id, event).result()
