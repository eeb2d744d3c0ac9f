"""The extensibility points: which exist, what the auth server must send, what an answer may do.

Everything here is pure: bodies in, bodies out. The flow of a blocking invocation is

    validate_event(trigger_id, body)            the auth server's body, checked (400 otherwise)
    chain = Chain(trigger_id, event)            one per invocation
    for each enabled hook, in order:
        chain.next_request()                    the body that hook is sent
        parse_receiver_answer(status, ct, raw)  its HTTP answer, as an `Answer`
        chain.apply(answer, hook_name=...)      folded in by the point's rules
        (or chain.fail(hook_name, reason) / skip, per the hook's failure policy)
        stop when chain.done
    chain.result()                              the envelope the auth server gets

`AnswerError` means "the receiver's answer is malformed": the caller treats it as a failed
attempt of that hook and lets the hook's failure policy decide.
"""

from __future__ import annotations

from .answers import (
    MAX_CLAIMS_BYTES,
    PASS_THROUGH_ERRORS,
    REGISTERED_CLAIMS,
    RESERVED_APP_METADATA_KEYS,
    RESERVED_CLAIM_HOSTS,
    Answer,
    AnswerError,
    error_envelope,
    filter_credentials_exchange,
    filter_pre_user_registration,
    parse_receiver_answer,
    server_error,
    standard_envelope,
    success_envelope,
)
from .chain import Chain, neutral_answer
from .events import sample_event, validate_event
from .triggers import (
    CREDENTIALS_EXCHANGE,
    POST_CHANGE_PASSWORD,
    POST_USER_REGISTRATION,
    PRE_USER_REGISTRATION,
    SEND_PHONE_MESSAGE,
    TRIGGER_IDS,
    TRIGGERS,
    Trigger,
    get_trigger,
    is_blocking,
)

__all__ = [
    "CREDENTIALS_EXCHANGE",
    "MAX_CLAIMS_BYTES",
    "PASS_THROUGH_ERRORS",
    "POST_CHANGE_PASSWORD",
    "POST_USER_REGISTRATION",
    "PRE_USER_REGISTRATION",
    "RESERVED_APP_METADATA_KEYS",
    "RESERVED_CLAIM_HOSTS",
    "REGISTERED_CLAIMS",
    "SEND_PHONE_MESSAGE",
    "TRIGGERS",
    "TRIGGER_IDS",
    "Answer",
    "AnswerError",
    "Chain",
    "Trigger",
    "error_envelope",
    "filter_credentials_exchange",
    "filter_pre_user_registration",
    "get_trigger",
    "is_blocking",
    "neutral_answer",
    "parse_receiver_answer",
    "sample_event",
    "server_error",
    "standard_envelope",
    "success_envelope",
    "validate_event",
]
