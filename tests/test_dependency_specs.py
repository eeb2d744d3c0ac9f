"""What a hook's `dependencies` may say (gateway/runtime/package_specs.py), checked against npm's
own parser: every version the gateway accepts is one npm reads as a registry version, range or
dist-tag (never a URL, git, a path, a tarball or an alias), and every name one it reads as that
package's name. Needs node and npm (npm-package-arg, in npm's own folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.runtime.package_specs import is_package_name, is_registry_version

NODE = shutil.which("node") or "/usr/bin/node"
NPM = shutil.which("npm") or "/usr/bin/npm"
NPA_TIMEOUT_S = 30.0
# npm-package-arg, as npm itself uses it: prints each (name, spec)'s type and name, or its error.
NPA = """
const npa = require(process.argv[1]);
const out = JSON.parse(require('fs').readFileSync(0, 'utf8')).map(([name, spec]) => {
  try { const r = npa.resolve(name, spec, '/nonexistent'); return [r.type, r.name]; }
  catch (e) { return ['error', String(e.code)]; }
});
process.stdout.write(JSON.stringify(out));
"""
SPEC_CHARS = "0123456789.xX*^~<>=|- +vVabcdefgilmnprstuwz:/@#\\\n\t_%"
NAME_CHARS = "abcdz019-._~@/ABC:%"


def npa_dir() -> Path:
    folder = Path(os.path.realpath(NPM)).parent.parent / "node_modules" / "npm-package-arg"
    if not (folder / "package.json").is_file():
        pytest.skip("npm (and its npm-package-arg) is not installed")
    return folder


def npa(pairs: list[tuple[str, str]]) -> list[list[str]]:
    done = subprocess.run([NODE, "-e", NPA, str(npa_dir())], input=json.dumps(pairs), capture_output=True,  # noqa: S603
                          text=True, timeout=NPA_TIMEOUT_S, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(st.text(alphabet=SPEC_CHARS, min_size=1, max_size=24), min_size=1, max_size=200))
def test_every_accepted_version_is_a_registry_version_to_npm(specs: list[str]) -> None:
    accepted = [s for s in specs if is_registry_version(s)]
    if not accepted:
        return
    for (kind, name), spec in zip(npa([("greet", s) for s in accepted]), accepted, strict=True):
        assert kind in ("version", "range", "tag") and name == "greet", (spec, kind)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(alphabet=NAME_CHARS, min_size=1, max_size=24), min_size=1, max_size=200))
def test_every_accepted_name_is_that_package_to_npm(names: list[str]) -> None:
    accepted = [n for n in names if is_package_name(n)]
    if not accepted:
        return
    for (kind, name), given_name in zip(npa([(n, "1.0.0") for n in accepted]), accepted, strict=True):
        assert kind == "version" and name == given_name, (given_name, kind)


def test_what_npm_would_fetch_elsewhere_is_refused() -> None:
    elsewhere = ["git+https://github.com/a/b.git", "git@github.com:a/b.git", "a/b", "github:a/b", "file:../x",
                 "link:../x", "../x", "/etc", "~/x", "http://127.0.0.1:9/x.tgz", "x.tgz", "1.0.0-a.tar.gz",
                 "npm:lodash@1", "workspace:*"]
    # npm reads each as something other than a registry version (or refuses it) ...
    read = npa([("greet", s) for s in elsewhere])
    kinds = {spec: kind for (kind, _), spec in zip(read, elsewhere, strict=True)}
    assert all(kind not in ("version", "range", "tag") for kind in kinds.values()), kinds
    # ... and the gateway refuses them, with what npm would read as a version but no hook needs.
    odd = ["", " ", "1.0.0\n", "1.0.0\t", "1" * 65]
    assert [s for s in elsewhere + odd if is_registry_version(s)] == []
