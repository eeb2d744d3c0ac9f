"""A hosted hook's `dependencies` (Auth0's `{name: version}`), checked before anything installs.

The set is the tenant's input and npm would read far more into a "version" than a version: a
URL, a git remote or a GitHub shorthand (`user/repo`), a `file:` or plain path, a tarball
name, an `npm:` alias, a `workspace:` reference. Only registry packages are accepted here:

- a name is an npm package name: lowercase letters, digits, `-`, `.` and `_` (not first), at
  most 214 characters, optionally under a `@scope/`;
- a version is an exact version, a semver range (`^4.17.0`, `>=1.2 <2 || 3.x`, `1.0.0 - 1.4`)
  or a dist-tag (`latest`, `next`): the grammar below, so no `:`, `/`, `@` or `#` can appear.

The install's own sandbox stops whatever slipped through (it reaches the registry only), and
npm is told to fetch no git, remote, file or folder dependency either (gateway/runtime/npm_install.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import BadRequest, shown

NAME_MAX_CHARS = 214  # npm's own limit on a package name
VERSION_MAX_CHARS = 64  # a version spec longer than this is no version a hook needs
FIELD = "dependencies"

_PART = r"(?:0|[1-9]\d{0,8}|[xX*])"  # a number (bounded), or a wildcard
_IDENT = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_PARTIAL = rf"v?{_PART}(?:\.{_PART}(?:\.{_PART}(?:-{_IDENT})?(?:\+{_IDENT})?)?)?"
_COMPARATOR = rf"(?:<=|>=|<|>|=|~>|~|\^)? *{_PARTIAL}"
_SET = rf"(?:{_PARTIAL} +- +{_PARTIAL}|{_COMPARATOR}(?: +{_COMPARATOR})*)"
RANGE = re.compile(rf" *{_SET}(?: *\|\| *{_SET})* *")  # spaces only: no other whitespace
DIST_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# npm reads a spec ending so as a tarball file (npm-package-arg's isFileType), whatever precedes.
TARBALL_SUFFIX = re.compile(r"\.(?:tgz|tar|tar\.gz) *$", re.IGNORECASE)
NAME = re.compile(r"(?:@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*")
RESERVED_NAMES = frozenset({"node_modules", "favicon.ico"})

Dependencies = tuple[tuple[str, str], ...]  # (name, version) sorted by name: the canonical set


def is_package_name(name: str) -> bool:
    return len(name) <= NAME_MAX_CHARS and NAME.fullmatch(name) is not None and name not in RESERVED_NAMES


def is_registry_version(spec: str) -> bool:
    """An exact version, a semver range or a dist-tag; nothing npm would fetch elsewhere."""
    if not spec or len(spec) > VERSION_MAX_CHARS or TARBALL_SUFFIX.search(spec):
        return False
    return RANGE.fullmatch(spec) is not None or DIST_TAG.fullmatch(spec) is not None


def check(value: object, *, max_entries: int) -> Dependencies:
    """The canonical set of `value` (the API field), or a 400 naming the entry at fault."""
    if not isinstance(value, Mapping):
        raise BadRequest("'dependencies' must be an object of npm package names to versions", field=FIELD)
    if len(value) > max_entries:
        raise BadRequest(f"'dependencies' may list at most {max_entries} packages on this gateway "
                         f"([runtime] max_dependencies)", field=FIELD)
    out: list[tuple[str, str]] = []
    for name, spec in value.items():
        if not isinstance(name, str) or not is_package_name(name):
            raise BadRequest(f"'dependencies': {shown(name)} is not an npm package name (lowercase letters, "
                             f"digits, '-', '.', '_', optionally under an @scope/; at most {NAME_MAX_CHARS} "
                             "characters)", field=FIELD)
        # The name is known to be plain characters from here on: messages may quote it.
        if not isinstance(spec, str) or not is_registry_version(spec):
            raise BadRequest(f"'dependencies': the version of {name!r} must be an exact version, a semver "
                             "range or a dist-tag of the registry (not a URL, git, GitHub shorthand, "
                             "path, file:, tarball or npm: alias)", field=FIELD)
        out.append((name, spec.strip()))
    return tuple(sorted(out))


def as_object(deps: Dependencies) -> dict[str, str]:
    return dict(deps)
