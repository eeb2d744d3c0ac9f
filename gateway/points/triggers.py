"""The five extensibility points, and which of them block."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from ..errors import NotFound, shown

CREDENTIALS_EXCHANGE: Final = "credentials-exchange"
PRE_USER_REGISTRATION: Final = "pre-user-registration"
SEND_PHONE_MESSAGE: Final = "send-phone-message"
POST_USER_REGISTRATION: Final = "post-user-registration"
POST_CHANGE_PASSWORD: Final = "post-change-password"  # noqa: S105 (a trigger name, not a password)


@dataclass(frozen=True, slots=True)
class Trigger:
    """One extensibility point: blocking ones wait for the receiver's answer."""

    id: str
    blocking: bool


TRIGGERS: Final[Mapping[str, Trigger]] = MappingProxyType(
    {
        t.id: t
        for t in (
            Trigger(CREDENTIALS_EXCHANGE, blocking=True),
            Trigger(PRE_USER_REGISTRATION, blocking=True),
            Trigger(SEND_PHONE_MESSAGE, blocking=True),
            Trigger(POST_USER_REGISTRATION, blocking=False),
            Trigger(POST_CHANGE_PASSWORD, blocking=False),
        )
    }
)
TRIGGER_IDS: Final[tuple[str, ...]] = tuple(TRIGGERS)


def get_trigger(trigger_id: str) -> Trigger:
    """The point named `trigger_id`; `NotFound` for a name that is not one."""
    try:
        return TRIGGERS[trigger_id]
    except KeyError:
        raise NotFound(f"unknown triggerId {shown(trigger_id)}") from None


def is_blocking(trigger_id: str) -> bool:
    """Whether the auth server waits for the answer (`NotFound` for an unknown point)."""
    return get_trigger(trigger_id).blocking
