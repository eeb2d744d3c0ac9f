"""Whatever a receiver sends, reading its answer gives a bounded result, never an exception:
`Retry-After`, `X-RateLimit-*`, and answer bodies (strict JSON). Property tests (hypothesis)
over any text and bytes, and examples of the odd values that broke attempts before."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import strictjson
from gateway.delivery.schedule import (
    RATE_LIMIT_INT_MAX,
    RESET_AHEAD_MAX_S,
    RETRY_AFTER_MAX_S,
    clamp_pause,
    parse_rate_limit,
    parse_retry_after,
    rate_limited_delay,
)
from gateway.points import Answer, AnswerError, parse_receiver_answer

NOW = 1_800_000_000.0  # unix seconds in 2027
nows = st.floats(min_value=0.0, max_value=4_102_444_800.0)  # 1970 .. 2100
# Header values as the outbound client hands them over: any bytes, decoded as latin-1.
header_texts = st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")))
ODD_VALUES = [
    "²", "١", "١٢", "٣٠", "𝟗", "inf", "-inf", "Infinity", "nan", "NaN", "1e400", "1e3", "-5", "-0",
    "+5", " 5 ", "5 6", "5,6", "0x10", "1_000", "\x00", "\t", "\r\n5", "9" * 30, "9" * 5000,
    "0" * 40 + "7", "99999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT", "Mon, 01 Jan 0001 00:00:00 +2359", "Sun, 06 Nov 1994 08:49:37 GMT",
    "Wed, 31 Dec 2100 23:59:59 GMT", "Â²", "Ù¡", "",
]  # fmt: skip


def assert_retry_after_bounded(value: float | None) -> None:
    assert value is None or (isinstance(value, float) and 0.0 <= value <= RETRY_AFTER_MAX_S)


def assert_rate_limit_bounded(headers: dict[str, str], now: float) -> None:
    info = parse_rate_limit(headers, now)
    for count in (info.limit, info.remaining):
        assert count is None or (type(count) is int and 0 <= count <= RATE_LIMIT_INT_MAX)
    assert info.reset is None or (math.isfinite(info.reset) and 0.0 <= info.reset <= now + RESET_AHEAD_MAX_S)


# --- Retry-After -------------------------------------------------------------------------------


@given(value=header_texts, now=nows)
@example(value="²", now=NOW)
@example(value="9" * 400, now=NOW)
@settings(deadline=None)
def test_any_retry_after_gives_none_or_a_bounded_delay(value: str, now: float) -> None:
    assert_retry_after_bounded(parse_retry_after(value, now))


@pytest.mark.parametrize("value", ODD_VALUES)
def test_odd_retry_after_values_give_none_or_a_bounded_delay(value: str) -> None:
    assert_retry_after_bounded(parse_retry_after(value, NOW))


@pytest.mark.parametrize("value", ["²", "١", "١٢", "𝟗", "inf", "nan", "1e400", "-5", "+5", "1_000", "0x10"])
def test_retry_after_takes_only_ascii_digits_or_a_date(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def test_retry_after_reads_delta_seconds_and_dates() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 7\t", NOW) == 7.0
    assert parse_retry_after("0", NOW) == 0.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW) == 0.0  # in the past: now
    assert parse_retry_after("Thu, 01 Jan 2027 00:00:30 GMT", 1_798_761_600.0) == 30.0


@pytest.mark.parametrize("value", ["9" * 30, "9" * 5000, "31622401", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_huge_retry_after_is_clamped(value: str) -> None:
    assert parse_retry_after(value, NOW) == RETRY_AFTER_MAX_S


# --- X-RateLimit-* -----------------------------------------------------------------------------


@given(limit=header_texts, remaining=header_texts, reset=header_texts, now=nows)
@example(limit="inf", remaining="1", reset="1", now=NOW)
@example(limit="1", remaining="99999999999999999999999", reset="1e400", now=NOW)
@settings(deadline=None)
def test_any_rate_limit_headers_give_bounded_values(
    limit: str, remaining: str, reset: str, now: float
) -> None:
    headers = {"x-ratelimit-limit": limit, "x-ratelimit-remaining": remaining, "x-ratelimit-reset": reset}
    assert_rate_limit_bounded(headers, now)


@given(limit=st.integers(), reset=st.floats(allow_nan=True, allow_infinity=True) | st.integers())
@settings(deadline=None)
def test_any_number_in_rate_limit_headers_gives_bounded_values(limit: int, reset: float) -> None:
    headers = {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(limit),
        "x-ratelimit-reset": str(reset),
    }
    assert_rate_limit_bounded(headers, NOW)


@pytest.mark.parametrize("value", ODD_VALUES)
def test_odd_rate_limit_values_give_bounded_values(value: str) -> None:
    assert_rate_limit_bounded(
        {"x-ratelimit-limit": value, "x-ratelimit-remaining": value, "x-ratelimit-reset": value}, NOW
    )


@pytest.mark.parametrize(
    "value", ["99999999999999999999999", str(2**53), "inf", "nan", "1e400", "-1", "²", "١٠", "1e3"]
)
def test_counts_outside_the_safe_integers_or_not_digits_read_as_absent(value: str) -> None:
    info = parse_rate_limit({"x-ratelimit-limit": value, "x-ratelimit-remaining": value}, NOW)
    assert (info.limit, info.remaining) == (None, None)


def test_rate_limit_headers_are_read() -> None:
    info = parse_rate_limit(
        {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "30"}, NOW
    )
    assert (info.limit, info.remaining, info.reset) == (100, 0, NOW + 30)
    assert parse_rate_limit({"x-ratelimit-reset": "1800000100"}, NOW).reset == 1_800_000_100.0  # unix
    assert parse_rate_limit({"x-ratelimit-remaining": str(2**53 - 1)}, NOW).remaining == 2**53 - 1


@pytest.mark.parametrize("value", ["1e400", "9" * 30, "9" * 5000, "99999999999"])
def test_a_reset_far_away_is_clamped_to_the_maximum_pause(value: str) -> None:
    reset = parse_rate_limit({"x-ratelimit-reset": value}, NOW).reset
    assert reset is None or reset == NOW + RESET_AHEAD_MAX_S
    if value != "1e400":  # digits: a reset, clamped; an exponent is not digits: absent
        assert reset == NOW + RESET_AHEAD_MAX_S


# --- back-off after 429s, pauses ---------------------------------------------------------------


@given(
    retry_after=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    n=st.integers(min_value=1, max_value=10_000),
    floor_s=st.floats(min_value=0.0, max_value=3600.0),
    max_s=st.floats(min_value=0.0, max_value=RETRY_AFTER_MAX_S),
)
@settings(deadline=None)
def test_the_delay_after_429s_is_bounded_and_backs_off(
    retry_after: float | None, n: int, floor_s: float, max_s: float
) -> None:
    delay = rate_limited_delay(retry_after, n, floor_s=floor_s, max_s=max_s)
    assert math.isfinite(delay) and 0.0 <= delay <= max_s
    assert delay >= min(max_s, floor_s * 2.0 ** min(n - 1, 64))
    if retry_after is not None and math.isfinite(retry_after):
        assert delay >= min(max_s, retry_after)


def test_retry_after_zero_cannot_make_a_loop() -> None:
    delays = [rate_limited_delay(0.0, n, floor_s=1.0, max_s=3600.0) for n in range(1, 15)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == 3600.0
    assert rate_limited_delay(30.0, 1, floor_s=1.0, max_s=3600.0) == 30.0
    assert rate_limited_delay(1e9, 1, floor_s=1.0, max_s=3600.0) == 3600.0


@given(
    until=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    now=nows,
    max_pause_s=st.floats(min_value=0.0, max_value=RESET_AHEAD_MAX_S),
)
def test_a_pause_never_ends_later_than_the_maximum(
    until: float | None, now: float, max_pause_s: float
) -> None:
    end = clamp_pause(until, now, max_pause_s)
    if until is None or math.isnan(until):
        assert end is None
    else:
        assert end is not None and end <= now + max_pause_s and (end == until or end == now + max_pause_s)


# --- answer bodies: strict JSON ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@given(data=st.binary())
@example(data=b"[" * 200_000)
@example(data=b'{"a": NaN}')
@example(data=b"1e400")
@example(data=b"1" * 5000)
@example(data=b'"\\ud800"')
@example(data=b"\xed\xa0\x80")  # a surrogate encoded as UTF-8: not UTF-8
@settings(deadline=None)
def test_any_bytes_are_strict_json_or_a_strict_json_error(data: bytes) -> None:
    try:
        value = strictjson.loads(data)
    except strictjson.StrictJSONError as exc:
        assert exc.message
        return
    strictjson.dumps(value).encode()  # what was read can be written again, strictly


def is_strict(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= strictjson.MAX_SAFE_INTEGER
    if isinstance(value, list):
        return all(is_strict(v) for v in value)
    if isinstance(value, dict):
        return all(is_strict(v) for v in value.values())
    return True


@given(value=json_values)
@settings(deadline=None)
def test_any_json_text_is_read_exactly_when_it_is_strict(value: Any) -> None:
    text = json.dumps(value)  # NaN, Infinity and huge integers included
    try:
        parsed = strictjson.loads(text.encode())
    except strictjson.StrictJSONError:
        assert not is_strict(value)
        return
    assert is_strict(value) and parsed == value
    assert json.loads(strictjson.dumps(parsed)) == value


@given(status=st.integers(min_value=100, max_value=599), ctype=st.none() | st.text(), body=st.binary())
@example(status=200, ctype="application/json", body=b'{"https://x.example/n": NaN}')
@example(status=200, ctype="application/json", body=b"[" * 200_000)
@settings(deadline=None)
def test_any_answer_is_an_answer_or_an_answer_error(status: int, ctype: str | None, body: bytes) -> None:
    try:
        answer = parse_receiver_answer(status, ctype, body)
    except AnswerError as exc:
        assert exc.message
        return
    assert isinstance(answer, Answer)
    strictjson.dumps(answer.data)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"x": NaN}', "NaN"),
        (b'{"x": Infinity}', "Infinity"),
        (b'{"x": -Infinity}', "-Infinity"),
        (b'{"x": 1e400}', "too large"),
        (b'{"x": 100000000000000000000000000000}', "outside"),
        (b'{"x": -9007199254740992}', "outside"),
        (b'{"x": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper"),
        (b'{"x": "\\udc00"}', "surrogate"),
    ],
)
def test_an_answer_that_is_not_strict_json_is_an_answer_error_saying_why(body: bytes, reason: str) -> None:
    with pytest.raises(AnswerError, match="not strict JSON") as caught:
        parse_receiver_answer(200, "application/json", body)
    assert reason in caught.value.message


def test_the_largest_safe_integers_and_a_deep_enough_value_are_fine() -> None:
    body = b'{"max": 9007199254740991, "min": -9007199254740991, "deep": ' + b"[" * 63 + b"]" * 63 + b"}"
    assert parse_receiver_answer(200, None, body).data["max"] == 2**53 - 1
