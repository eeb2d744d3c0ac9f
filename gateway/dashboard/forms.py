"""HTML forms to the Management API's JSON bodies, and its errors back to the fields.

Forms send text; the API's bodies are typed. A text that reads as the type the API expects is
converted; any other text is passed on as it is, so the API's own check refuses it with its
own message ("'timeoutMs' must be an integer"): the dashboard and the API cannot disagree on
a rule because there is one copy of each rule."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ApiError

FORM_ERROR = "_form"  # an error that belongs to no one field
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_NUMBER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?")

HOOK_OPTION_FIELDS = ("order", "timeoutMs", "failurePolicy", "maxConcurrency", "rateLimitPerSecond", "format")
INTEGER_FIELDS = frozenset({"order", "timeoutMs", "maxConcurrency"})


def text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def integer(value: str) -> Any:
    """`"12"` as 12; any other text as it is (the API refuses it, naming the field)."""
    return int(value) if _INTEGER.fullmatch(value) else value


def number_or_null(value: str) -> Any:
    if value == "":
        return None
    return float(value) if _NUMBER.fullmatch(value) else value


def script(form: Mapping[str, Any]) -> str:
    """The script as typed, but for its line ends: browsers send a textarea's as CRLF."""
    value = form.get("script", "")
    return value.replace("\r\n", "\n") if isinstance(value, str) else ""


def dependencies(value: str) -> dict[str, str]:
    """A script's npm dependencies, one `name@version` a line as npm writes them (`@scope/name@1.2.3`;
    a name alone is `latest`). What is not a name is sent as it is: the API refuses it, naming it."""
    out: dict[str, str] = {}
    for line in lines(value):
        at = line.rfind("@")
        name, version = (line[:at], line[at + 1:]) if at > 0 else (line, "latest")
        out[name.strip()] = version.strip()
    return out


def dependencies_text(pairs: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"{name}@{version}" for name, version in pairs)


def hook_body(form: Mapping[str, Any], *, creating: bool, blocking: bool) -> dict[str, Any]:
    """The API body of the hook form. Empty option fields are left out (the API's defaults).
    A hook calls a URL or runs a script: a script that is not blank is sent, the URL when it is
    given or there is no script (both given: the API refuses them, naming the rule)."""
    body: dict[str, Any] = {"name": text(form, "name")}
    url, code = text(form, "url"), script(form)
    if code.strip():
        body["script"] = code
        body["dependencies"] = dependencies(text(form, "dependencies"))
    if url or not code.strip():
        body["url"] = url
    if creating:
        body["triggerId"] = text(form, "triggerId")
        body["enabled"] = form.get("enabled") == "on"
    for key in HOOK_OPTION_FIELDS:
        value = text(form, key)
        if key == "failurePolicy" and not blocking:
            continue
        if key == "rateLimitPerSecond":
            if value != "" or not creating:
                body[key] = number_or_null(value)
            continue
        if value == "":
            continue
        body[key] = integer(value) if key in INTEGER_FIELDS else value
    return body


def hook_values(form: Mapping[str, Any]) -> dict[str, str]:
    """What the user typed, to show again in a form that was refused."""
    keys = ("name", "url", "triggerId", *HOOK_OPTION_FIELDS)
    values = {k: text(form, k) for k in keys}
    values["script"] = script(form)
    values["dependencies"] = text(form, "dependencies")
    values["enabled"] = "on" if form.get("enabled") == "on" else ""
    return values


def lines(value: str) -> list[str]:
    """A textarea of one item per line (or separated by commas), blank ones dropped."""
    return [part.strip() for part in re.split(r"[\n,]", value) if part.strip()]


def errors_of(exc: ApiError, fields: Iterable[str]) -> dict[str, str]:
    """The API's error placed next to its field when the form has that field."""
    field = exc.field if exc.field in set(fields) else FORM_ERROR
    return {field or FORM_ERROR: exc.message}
