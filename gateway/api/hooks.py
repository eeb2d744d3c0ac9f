"""`/api/v2/hooks`: Auth0's hooks resource, plus the gateway's own fields."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from aiohttp import web

from .. import ids, points, quotas
from ..auth import SCOPE_CREATE, SCOPE_DELETE, SCOPE_READ, SCOPE_UPDATE
from ..context import Services, services
from ..egress import check_url
from ..errors import BadRequest, Conflict, Forbidden, NotFound, shown
from ..middleware import tenant_of
from ..runtime import package_specs
from ..runtime.npm_install import InstallFailure
from ..runtime.supervisor import HostedHook
from ..signing import SCHEME_SYMMETRIC, SCHEMES
from ..store.models import Hook
from ..web import (
    MAX_PAGE,
    apply_fields,
    fields_filter,
    iso,
    json_response,
    no_content,
    query_bool,
    query_int,
    read_json,
    require_object,
)
from . import signing_secrets, validate

NAME_PATTERN = re.compile(r"[a-zA-Z0-9]([ \-a-zA-Z0-9]*[a-zA-Z0-9])?")
NAME_MAX = 128
URL_MAX = 2048
TIMEOUT_MS_MIN, TIMEOUT_MS_MAX = 100, 60_000
ORDER_MIN, ORDER_MAX = -1_000_000, 1_000_000
DEFAULT_TIMEOUT_MS = 10_000
MAX_CONCURRENCY_MAX = 1000
RATE_MAX = 10_000.0
DEFAULT_PER_PAGE, MAX_PER_PAGE = 50, 100
FORMATS = ("auth0", "standard")
FAILURE_POLICIES = ("fail", "skip")
SINGLE_ENABLED = frozenset({points.SEND_PHONE_MESSAGE})
# A hosted hook's script: at most this many characters and UTF-8 bytes. The characters bound
# the script as JSON (6 bytes for an escaped one) within the default [server] max_body_bytes.
SCRIPT_MAX_CHARS = 40_000
SCRIPT_MAX_BYTES = 100 * 1024

HOOK_FIELDS = {
    "id", "name", "triggerId", "url", "enabled", "order", "timeoutMs", "failurePolicy",
    "maxConcurrency", "rateLimitPerSecond", "format", "disabledReason", "createdAt", "updatedAt",
    "signatureScheme", "script", "dependencies",
}
WRITABLE = {"name", "url", "enabled", "order", "timeoutMs", "failurePolicy", "maxConcurrency",
            "rateLimitPerSecond", "format", "signatureScheme", "script", "dependencies"}


def render(h: Hook) -> dict[str, Any]:
    return {
        "id": h.id,
        "name": h.name,
        "triggerId": h.trigger_id,
        "url": h.url if h.script is None else None,
        "enabled": h.enabled,
        "order": h.order,
        "timeoutMs": h.timeout_ms,
        "failurePolicy": h.failure_policy,
        "maxConcurrency": h.max_concurrency,
        "rateLimitPerSecond": h.rate_limit_per_second,
        "format": h.format,
        "disabledReason": h.disabled_reason,
        "createdAt": iso(h.created_at),
        "updatedAt": iso(h.updated_at),
        "signatureScheme": h.signature_scheme,
        # Auth0's fields of a hook's code: run by the gateway (gateway/runtime/) instead of a `url`.
        "script": h.script,
        "dependencies": dict(h.dependencies),
    }


def _check_known(body: dict[str, Any], allowed: set[str]) -> None:
    validate.no_unknown(body, allowed)
    if "url" in body and "script" in body:
        raise BadRequest("a hook has either a 'url' or a 'script', not both", field="script")


def _check_script(svc: Services, body: dict[str, Any]) -> str:
    """A hosted hook's script, once this gateway can run it (else a 400 naming what is missing)."""
    script = body["script"]
    if not isinstance(script, str) or not script.strip():
        raise BadRequest("'script' must be a non-empty string", field="script")
    if len(script) > SCRIPT_MAX_CHARS or len(script.encode("utf-8", "surrogatepass")) > SCRIPT_MAX_BYTES:
        raise BadRequest(f"'script' must be at most {SCRIPT_MAX_CHARS} characters and {SCRIPT_MAX_BYTES} "
                         "bytes of UTF-8", field="script")
    refusal = svc.registry.hosting.refusal
    if refusal is not None:
        raise BadRequest(f"a hook with a 'script' cannot run on this gateway: {refusal}; "
                         "give the hook a 'url' instead", field="script")
    return script


def _check_dependencies(svc: Services, body: dict[str, Any]) -> package_specs.Dependencies:
    """The canonical set, checked (no install yet); `{}` is always accepted."""
    deps = body["dependencies"]
    limit = svc.settings.runtime.max_dependencies
    if limit == 0 and isinstance(deps, dict) and deps:
        raise BadRequest("'dependencies' are off on this gateway ([runtime] max_dependencies = 0): a "
                         "hosted hook's script may require node's built-in modules only",
                         field="dependencies")
    return package_specs.check(deps, max_entries=limit)


@contextlib.asynccontextmanager
async def _installed(svc: Services, tenant: str, deps: package_specs.Dependencies) -> AsyncIterator[None]:
    """The set installed (or found installed) before the hook is saved in the block, as Auth0's
    editor did on save: a set that cannot be installed is the save's 400. No sweep removes it
    meanwhile; a save that fails leaves it to the next sweep."""
    if not deps:
        yield
        return
    hosting = svc.registry.hosting
    try:
        async with hosting.installed(deps, tenant=tenant):
            try:
                yield
            except BaseException:
                hosting.sweep_soon()  # the set may be no hook's
                raise
    except InstallFailure as exc:
        raise BadRequest(f"'dependencies' could not be installed: {exc.reason}",
                         field="dependencies") from None


async def _refusals_before_install(svc: Services, hook: Hook, *, max_per_point: int | None = None,
                                   max_hooks: int | None = None, renamed: bool = True,
                                   enabling: bool = False) -> None:
    """What the store would refuse when saving `hook`, checked before its dependencies install
    (the store checks again, in the save's transaction): the tenant's quotas (on create), its
    hooks' names, the one enabled hook of a point."""
    store, tenant = svc.store, hook.tenant_id
    if max_per_point is not None:
        on_point = (await store.list_hooks(tenant, trigger_id=hook.trigger_id, limit=1)).total
        if on_point >= max_per_point:
            raise Forbidden(f"quota 'hooksPerPoint' is {max_per_point}: the tenant has {on_point} hooks on "
                            f"{hook.trigger_id!r}; delete one, or ask the operator to raise the quota")
    if max_hooks is not None:
        total = (await store.list_hooks(tenant, limit=1)).total
        if total >= max_hooks:
            raise Forbidden(f"quota 'hooks' is {max_hooks}: the tenant has {total} hooks; delete one, or ask "
                            "the operator to raise the quota")
    if enabling and hook.trigger_id in SINGLE_ENABLED:
        enabled = await store.list_hooks(tenant, enabled=True, trigger_id=hook.trigger_id, limit=2)
        other = next((h for h in enabled.items if h.id != hook.id), None)
        if other is not None:
            raise Conflict(f"only one {hook.trigger_id} hook can be enabled; {other.name!r} already is",
                           field="enabled")
    if renamed:
        first = await store.list_hooks(tenant, limit=MAX_PER_PAGE)
        for offset in range(0, first.total, MAX_PER_PAGE):
            page = first if offset == 0 else await store.list_hooks(tenant, offset=offset, limit=MAX_PER_PAGE)
            if any(h.name == hook.name and h.id != hook.id for h in page.items):
                raise Conflict(f"a hook named {hook.name!r} already exists", field="name")


def _check_hosted_format(is_script: bool, fmt: str) -> None:
    if is_script and fmt != "auth0":
        raise BadRequest("a hook with a 'script' takes the point's body unchanged: its 'format' must be "
                         "'auth0'", field="format")


def _check_hosted_dependencies(is_script: bool, deps: package_specs.Dependencies) -> None:
    if deps and not is_script:
        raise BadRequest("'dependencies' apply to a hook with a 'script' only", field="dependencies")


def _prewarm_or_forget(svc: Services, hook: Hook) -> None:
    """An enabled hosted hook's process is started now; one disabled or changed goes."""
    hosting = svc.registry.hosting
    if hook.script is not None and hook.enabled:
        hosting.prewarm(HostedHook(hook.tenant_id, hook.id, hook.trigger_id, hook.script,
                                   dependencies=hook.dependencies))
    else:
        hosting.forget(hook.id)


def _check_fields(svc: Services, body: dict[str, Any]) -> dict[str, Any]:
    """Validated writable fields, by API name."""
    out: dict[str, Any] = {}
    if "name" in body:
        out["name"] = validate.string(body, "name", max_len=NAME_MAX, pattern=NAME_PATTERN,
                                      hint="^[a-zA-Z0-9]([ \\-a-zA-Z0-9]*[a-zA-Z0-9])?$")
    if "url" in body:
        url = validate.string(body, "url", max_len=URL_MAX)
        try:
            check_url(url, allow_http=svc.settings.egress.allow_http, allow_cidrs=svc.egress_allow)
        except BadRequest as exc:
            raise BadRequest(exc.message, field="url") from None
        out["url"] = url
    if "enabled" in body:
        out["enabled"] = validate.boolean(body, "enabled")
    if "order" in body:
        out["order"] = validate.integer(body, "order", minimum=ORDER_MIN, maximum=ORDER_MAX)
    if "timeoutMs" in body:
        out["timeoutMs"] = validate.integer(body, "timeoutMs", minimum=TIMEOUT_MS_MIN, maximum=TIMEOUT_MS_MAX)
    if "failurePolicy" in body:
        out["failurePolicy"] = validate.choice(body, "failurePolicy", FAILURE_POLICIES)
    if "maxConcurrency" in body:
        out["maxConcurrency"] = validate.integer(body, "maxConcurrency", minimum=1,
                                                 maximum=MAX_CONCURRENCY_MAX)
    if "rateLimitPerSecond" in body:
        out["rateLimitPerSecond"] = validate.number_or_null(body, "rateLimitPerSecond", minimum=0.01,
                                                            maximum=RATE_MAX)
    if "format" in body:
        out["format"] = validate.choice(body, "format", FORMATS)
    if "signatureScheme" in body:
        out["signatureScheme"] = validate.choice(body, "signatureScheme", SCHEMES)
    if "dependencies" in body:
        out["dependencies"] = _check_dependencies(svc, body)
    if "script" in body:
        out["script"] = _check_script(svc, body)
    return out


# -- the operations, shared by the Management API and the dashboard ---------------------------


async def create(svc: Services, tenant: str, body: dict[str, Any]) -> Hook:
    """Validate `body` (API field names) and store a new hook of `tenant` with its first signing
    secret, under the tenant's quotas and the one-enabled rule."""
    _check_known(body, WRITABLE | {"triggerId"})
    for key in ("name", "triggerId"):
        if key not in body:
            raise BadRequest(f"{key!r} is required", field=key)
    if "url" not in body and "script" not in body:
        raise BadRequest("'url' is required (or, for a hook the gateway runs, 'script')", field="url")
    trigger = validate.choice(body, "triggerId", points.TRIGGER_IDS)
    fields = _check_fields(svc, body)
    _check_hosted_format("script" in fields, fields.get("format", "auth0"))
    _check_hosted_dependencies("script" in fields, fields.get("dependencies", ()))
    blocking = points.is_blocking(trigger)
    if "failurePolicy" in fields and not blocking:
        raise BadRequest("'failurePolicy' applies to blocking points only", field="failurePolicy")
    now = svc.clock()
    default_timeout = svc.settings.sync.default_timeout if blocking else svc.settings.delivery.timeout
    hook = Hook(
        id=ids.new_id(ids.HOOK, now=now),
        tenant_id=tenant,
        name=fields["name"],
        trigger_id=trigger,
        url=fields.get("url", ""),
        enabled=fields.get("enabled", False),
        order=fields.get("order", 0),
        timeout_ms=fields.get("timeoutMs", int(default_timeout * 1000)),
        failure_policy=fields.get("failurePolicy", "fail"),
        max_concurrency=fields.get("maxConcurrency", svc.settings.delivery.default_max_concurrency),
        rate_limit_per_second=fields.get("rateLimitPerSecond"),
        format=fields.get("format", "auth0"),
        disabled_reason=None,
        created_at=now,
        updated_at=now,
        signature_scheme=fields.get("signatureScheme", SCHEME_SYMMETRIC),
        script=fields.get("script"),
        dependencies=fields.get("dependencies", ()),
    )
    secret, public_key = signing_secrets.new_key(svc, hook.id, hook.signature_scheme)
    quota = await quotas.of_tenant(svc.store, svc.settings.quotas, tenant)
    if hook.dependencies:  # an install is costly: not for a save the store would refuse anyway
        await _refusals_before_install(svc, hook, max_per_point=quota.hooks_per_point, max_hooks=quota.hooks,
                                       enabling=hook.enabled)
    async with _installed(svc, tenant, hook.dependencies):
        await svc.store.create_hook(
            hook,
            secret,
            single_enabled=trigger in SINGLE_ENABLED,
            max_per_point=quota.hooks_per_point,
            max_hooks=quota.hooks,
            signing_public_key=public_key,
        )
    svc.registry.invalidate(tenant)
    _prewarm_or_forget(svc, hook)
    return hook


async def find(svc: Services, tenant: str, hook_id: str) -> Hook:
    """The tenant's hook, or `NotFound` (another tenant's hook is not found either)."""
    hook = await svc.store.get_hook(tenant, hook_id)
    if hook is None:
        raise NotFound("hook not found")
    return hook


async def update(svc: Services, tenant: str, hook_id: str, body: dict[str, Any]) -> Hook:
    """Apply `body` (API field names) to the tenant's hook; `triggerId` cannot change. A new
    `signatureScheme` is a rotation to a key of that scheme (the old key signs on for the grace
    period, `[delivery] signing_grace`)."""
    _check_known(body, WRITABLE | {"triggerId", "id"})
    current = await find(svc, tenant, hook_id)
    if "triggerId" in body and body["triggerId"] != current.trigger_id:
        raise BadRequest("'triggerId' cannot be changed; create a new hook instead", field="triggerId")
    if "id" in body and body["id"] != current.id:
        raise BadRequest("'id' cannot be changed", field="id")
    fields = _check_fields(svc, body)
    if "script" in fields:
        fields["url"] = ""  # a hook has either: the new one replaces the other
    elif "url" in fields:
        fields["script"] = None
        fields.setdefault("dependencies", ())  # a url hook's are none: they went with the script
    hosted = fields.get("script", current.script) is not None
    _check_hosted_format(hosted, fields.get("format", current.format))
    _check_hosted_dependencies(hosted, fields.get("dependencies", current.dependencies))
    if "failurePolicy" in fields and not points.is_blocking(current.trigger_id):
        raise BadRequest("'failurePolicy' applies to blocking points only", field="failurePolicy")
    if fields.get("enabled"):
        fields["disabledReason"] = None
    deps = fields.get("dependencies", ())
    if deps:  # an install is costly: not for a save the store would refuse anyway
        await _refusals_before_install(svc, replace(current, name=fields.get("name", current.name)),
                                       renamed="name" in fields,
                                       enabling=bool(fields.get("enabled")) and not current.enabled)
    scheme = fields.pop("signatureScheme", current.signature_scheme)
    single = current.trigger_id if current.trigger_id in SINGLE_ENABLED else None
    async with _installed(svc, tenant, deps):
        _, after = await svc.store.update_hook(tenant, hook_id, fields, svc.clock(),
                                               single_enabled_trigger=single)
    svc.registry.invalidate(tenant)
    _prewarm_or_forget(svc, after)
    if after.dependencies != current.dependencies:
        svc.registry.hosting.sweep_soon()  # its former set may be no hook's now
    if scheme != after.signature_scheme:  # the scheme changes only with its key, in one transaction
        await signing_secrets.rotate(svc, tenant, hook_id, None, scheme=scheme)
        after = await find(svc, tenant, hook_id)
    return after


async def delete(svc: Services, tenant: str, hook_id: str) -> None:
    """Delete the tenant's hook; its pending deliveries are cancelled."""
    hosting = svc.registry.hosting
    gone = await svc.store.get_hook(tenant, hook_id) if hosting.dependencies is not None else None
    await svc.store.delete_hook(tenant, hook_id, svc.clock())
    svc.registry.invalidate(tenant)
    hosting.forget(hook_id)
    if gone is not None and gone.dependencies:
        hosting.sweep_soon()  # its set may be no hook's now


# -- the Management API's handlers ------------------------------------------------------------


async def list_hooks(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_READ)
    page = query_int(request, "page", default=0, minimum=0, maximum=MAX_PAGE)
    per_page = query_int(request, "per_page", default=DEFAULT_PER_PAGE, minimum=1, maximum=MAX_PER_PAGE)
    include_totals = query_bool(request, "include_totals") or False
    enabled = query_bool(request, "enabled")
    trigger = request.query.get("triggerId") or None
    if trigger is not None and trigger not in points.TRIGGER_IDS:
        raise BadRequest(f"unknown triggerId {shown(trigger)}")
    names, include = fields_filter(request, HOOK_FIELDS)
    result = await svc.store.list_hooks(
        tenant, enabled=enabled, trigger_id=trigger, offset=page * per_page, limit=per_page
    )
    hooks = [apply_fields(render(h), names, include) for h in result.items]
    if include_totals:
        return json_response(
            {"start": page * per_page, "limit": per_page, "total": result.total, "hooks": hooks}
        )
    return json_response(hooks)


async def create_hook(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_CREATE)
    body = require_object(await read_json(request, svc.settings.server.max_body_bytes))
    hook = await create(svc, tenant, body)
    return json_response(render(hook), status=201)


async def get_hook(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_READ)
    hook = await find(svc, tenant, request.match_info["id"])
    names, include = fields_filter(request, HOOK_FIELDS)
    return json_response(apply_fields(render(hook), names, include))


async def update_hook(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = require_object(await read_json(request, svc.settings.server.max_body_bytes))
    after = await update(svc, tenant, request.match_info["id"], body)
    return json_response(render(after))


async def delete_hook(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_DELETE)
    await delete(svc, tenant, request.match_info["id"])
    return no_content()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v2/hooks", list_hooks, allow_head=False),
        web.post("/api/v2/hooks", create_hook),
        web.get("/api/v2/hooks/{id}", get_hook, allow_head=False),
        web.patch("/api/v2/hooks/{id}", update_hook),
        web.delete("/api/v2/hooks/{id}", delete_hook),
    ]
