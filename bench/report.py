"""The console table and docs/BENCHMARKS.md."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .profile import Summary
from .results import Section, Target


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) // 1024:,} MiB"
    except (OSError, ValueError):
        pass
    cores = os.cpu_count() or 0
    return {
        "cores": str(cores),
        "cpu": model,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
    }


def save(path: Path, sections: list[Section], **meta: object) -> None:
    """The run's figures as JSON, so the markdown can be rendered again (`--render`)."""
    data = {"meta": meta, "sections": [dataclasses.asdict(s) for s in sections]}
    path.write_text(json.dumps(data, indent=1))


def load(path: Path) -> tuple[dict[str, Any], list[Section]]:
    data = json.loads(path.read_text())
    sections = []
    for raw in data["sections"]:
        raw["targets"] = [Target(**t) for t in raw["targets"]]
        raw["profiles"] = [Summary(**p) for p in raw["profiles"]]
        raw["extra_tables"] = [tuple(t) for t in raw["extra_tables"]]
        sections.append(Section(**raw))
    return data["meta"], sections


def _fmt_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def console(section: Section) -> str:
    parts = [f"\n== Scenario {section.key}: {section.title} =="]
    if section.rows:
        parts.append(_fmt_table(section.headers, section.rows))
    for headers, rows in section.extra_tables:
        parts.append(_fmt_table(headers, rows))
    for t in section.targets:
        parts.append(f"[{t.mark()}] {t.name}: {t.measured} (target {t.goal})")
    for n in section.notes:
        parts.append(f"  - {n}")
    for p in section.profiles:
        parts.append(_console_profile(p))
    return "\n".join(parts)


def _console_profile(p: Summary) -> str:
    if p.error:
        return f"  profile ({p.label}): {p.error}"
    lines = [f"  profile: {p.label} ({p.samples:,} samples)", "    top functions by own time:"]
    lines += [f"      {share * 100:5.1f}%  {name}" for name, share in p.own[:10]]
    lines.append("    gateway functions by inclusive time:")
    lines += [f"      {share * 100:5.1f}%  {name}" for name, share in p.inclusive[:10]]
    lines.append("    own time by package: " + ", ".join(f"{n} {s * 100:.0f}%" for n, s in p.packages[:8]))
    if p.threads:
        lines.append("    busy threads (all-threads recording): "
                     + ", ".join(f"{n} {s * 100:.0f}%" for n, s in p.threads))
        lines += [f"      {share * 100:5.1f}%  {name}" for name, share in p.db_own]
    return "\n".join(lines)


def _md_profile(p: Summary) -> str:
    if p.error:
        return f"*{p.label}*: {p.error}\n"
    out = [f"#### {p.label}", "",
           f"{p.samples:,} samples of `py-spy record --gil` at 250 Hz: the thread holding the GIL, i.e. "
           "where Python time goes. Own time by package: "
           + ", ".join(f"{n} {s * 100:.0f}%" for n, s in p.packages[:8]) + ".", ""]
    if p.threads:
        out += ["A second recording of every busy thread at the same time (SQLite runs in the database "
                "threads without the GIL): " + ", ".join(f"{n} {s * 100:.0f}%" for n, s in p.threads)
                + "; in the database threads: "
                + ", ".join(f"`{n}` {s * 100:.1f}%" for n, s in p.db_own[:4]) + ".", ""]
    out.append(_md_table(["own time", "function"], [[f"{s * 100:.1f}%", f"`{n}`"] for n, s in p.own[:12]]))
    out.append("")
    out.append(_md_table(["inclusive", "gateway function"],
                         [[f"{s * 100:.1f}%", f"`{n}`"] for n, s in p.inclusive[:12]]))
    return "\n".join(out) + "\n"


def markdown(sections: list[Section], *, command: str, pinning: str, started: float, elapsed_s: float,
             analysis: str, machine_info: dict[str, str] | None = None) -> str:
    m = machine_info or machine()
    out = [
        "# Benchmarks",
        "",
        "Generated by `bench/` (`make bench`, i.e. `.venv/bin/python -m bench`). Every figure below was",
        "measured in one run, against baselines measured in the same run on the same receiver.",
        "",
        "## Machine and method",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; whole run: {elapsed_s:.0f} s",
        f"- cores: {m['cores']}; CPU: {m['cpu']}; memory: {m['memory']}; {m['os']}; Python {m['python']}",
        f"- command: `{command}`",
        f"- pinning: {pinning}",
        "- everything on loopback (127.0.0.1). The receiver is a minimal aiohttp server answering",
        "  `{\"status\":\"success\",\"data\":{\"scope\":[...]}}` at once. The load generator is one aiohttp",
        "  `ClientSession` with N concurrent tasks in its own process, bounded in count and time, after",
        "  a warm-up that is not counted. The bare relay is a minimal aiohttp server forwarding each",
        "  request with one shared `ClientSession`: the floor of any Python hop.",
        "- the gateway runs as `python -m gateway.cli serve --config <generated toml>` with uvloop, a",
        "  SQLite file (WAL, synchronous=FULL) in a temporary directory, `[egress] allow_http = true`,",
        "  `allow_cidrs = [\"127.0.0.0/8\"]`, generous `[ratelimit]` and an encryption key; a fresh",
        "  gateway and database per measurement; tenant and hooks are created through its API with",
        "  tokens from `gateway.auth.mint`.",
        "",
        "## Targets",
        "",
    ]
    rows = [[s.key, t.name, t.measured, t.goal, f"**{t.mark()}**"] for s in sections for t in s.targets]
    out.append(_md_table(["scenario", "target", "measured", "goal", "result"], rows))
    out.append("")
    for s in sections:
        out += [f"## Scenario {s.key}: {s.title}", ""]
        if s.rows:
            out += [_md_table(s.headers, s.rows), ""]
        for headers, rows in s.extra_tables:
            out += [_md_table(headers, rows), ""]
        out += [f"- {n}" for n in s.notes]
        out.append("")
    profiles = [p for s in sections for p in s.profiles]
    out += ["## What the profile shows", ""]
    if analysis:
        out += [analysis.strip(), ""]
    if profiles:
        out += [_md_profile(p) for p in profiles]
    else:
        out.append("No profile in this run (`python -m bench --profile` with py-spy installed in .venv).")
    return "\n".join(out).rstrip() + "\n"


def _md_section(s: Section) -> list[str]:
    out = [f"## Scenario {s.key}: {s.title}", ""]
    if s.rows:
        out += [_md_table(s.headers, s.rows), ""]
    for headers, rows in s.extra_tables:
        out += [_md_table(headers, rows), ""]
    out += [f"- {n}" for n in s.notes]
    out.append("")
    return out


def _scenario_key(line: str) -> str | None:
    """The key of a `## Scenario K: ...` heading, else None."""
    if not line.startswith("## Scenario "):
        return None
    return line[len("## Scenario "):].split(":", 1)[0].strip()


def _order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (1 << 30, key)


def splice(page: str, sections: list[Section], *, command: str, started: float) -> str:
    """`page` (a rendered docs/BENCHMARKS.md) with these sections and their rows of the targets
    table replaced, or added in scenario order; every other figure stays as it was. Each spliced
    section says when and how it was measured, since the page's header describes another run."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    fresh = {s.key: s for s in sections}
    lines = page.rstrip("\n").split("\n")
    # The targets table: drop these scenarios' rows, add the new ones, keep scenario order.
    try:
        head = lines.index("## Targets")
        first = next(i for i in range(head + 1, len(lines)) if lines[i].startswith("| scenario |"))
    except (ValueError, StopIteration):
        raise ValueError("the page has no targets table to update") from None
    end = first + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    kept = [r for r in lines[first + 2:end] if r.split("|")[1].strip() not in fresh]
    new = ["| " + " | ".join([s.key, t.name, t.measured, t.goal, f"**{t.mark()}**"]) + " |"
           for s in sections for t in s.targets]
    rows = sorted(kept + new, key=lambda r: _order(r.split("|")[1].strip()))  # stable
    lines[first + 2:end] = rows
    # The scenario sections: replace in place, or insert before the next one (or the profile).
    for key in sorted(fresh, key=_order):
        s = fresh[key]
        block = _md_section(dataclasses.replace(
            s, notes=[*s.notes, f"measured on {stamp} by `{command}`, apart from the run above"]))
        start = next((i for i, line in enumerate(lines) if _scenario_key(line) == key), None)
        if start is not None:
            stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        else:
            start = next((i for i, line in enumerate(lines)
                          if (k := _scenario_key(line)) is not None and _order(k) > _order(key)
                          or line == "## What the profile shows"), len(lines))
            stop = start
        lines[start:stop] = block
    return "\n".join(lines).rstrip() + "\n"
