"""`python -m bench [--quick] [--scenario N]... [--profile | --no-profile] [--output FILE] [--update]`.

A full run (all scenarios, not --quick) rewrites docs/BENCHMARKS.md and profiles the gateway
when py-spy is installed; a partial or quick run only prints, unless --output is given, or
--update, which replaces only the scenarios run on the existing page and keeps the rest.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import (
    report,
    s1_blocking,
    s2_async,
    s3_backlog,
    s4_ratelimit,
    s5_noisy,
    s6_postgres,
    s7_retention,
    s8_tracing,
    s9_hosted,
)
from .procs import Pinning
from .profile import py_spy
from .results import Context, Section, Target

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"
ANALYSIS = Path(__file__).resolve().parent / "ANALYSIS.md"  # the hand-written reading of the profile
SAVED = Path(tempfile.gettempdir()) / "gateway-bench-last.json"
SCENARIOS: dict[str, tuple[str, Callable[[Context], Section]]] = {
    "1": ("blocking credentials-exchange", s1_blocking.run),
    "2": ("asynchronous ingest and end to end", s2_async.run),
    "3": ("backlog drain", s3_backlog.run),
    "4": ("receiver rate limit", s4_ratelimit.run),
    "5": ("noisy neighbour", s5_noisy.run),
    "6": ("PostgreSQL", s6_postgres.run),
    "7": ("retention", s7_retention.run),
    "8": ("tracing off and on", s8_tracing.run),
    "9": ("hosted hooks", s9_hosted.run),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short durations, 100k instead of 1M backlog")
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                   help="run only these (repeatable)")
    prof = p.add_mutually_exclusive_group()
    prof.add_argument("--profile", action="store_true", default=None,
                      help="sample the gateway with py-spy during scenarios 1 and 2 "
                      "(extra runs, not the measured ones)")
    prof.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--output", type=Path,
                   help=f"write the markdown report here (default for a full run: {DOC})")
    p.add_argument("--update", action="store_true",
                   help=f"replace only the scenarios run (their sections and targets) on the existing page "
                   f"(--output, default {DOC}); every other figure stays")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help=f"only render the markdown again from a saved run (default output: {DOC})")
    return p


def render(saved: Path, output: Path) -> int:
    meta, sections = report.load(saved)
    analysis = ANALYSIS.read_text() if ANALYSIS.exists() else ""
    output.write_text(report.markdown(sections, analysis=analysis, **meta))
    print(f"bench: wrote {output} from {saved}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.render is not None:
        return render(args.render, args.output or DOC)
    chosen = args.scenario or sorted(SCENARIOS)
    full = not args.quick and not args.scenario
    spy = py_spy()
    profile = args.profile if args.profile is not None else full and spy is not None
    if profile and spy is None:
        print("--profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    pin = Pinning.detect(enabled=not args.no_pin)
    pin.pin_self()
    output = args.output or (DOC if full or args.update else None)
    command = " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    machine = report.machine()
    print(f"bench: {machine['cores']} cores, {machine['cpu']}; {pin.describe()}")
    if not profile:
        print("bench: no profile (" + ("py-spy not installed" if spy is None else "not asked for") + ")")
    started = time.time()
    sections: list[Section] = []
    shared: dict[str, object] = {}
    tmp = tempfile.mkdtemp(prefix="gateway-bench-")
    failed = False
    try:
        for key in chosen:
            name, fn = SCENARIOS[key]
            ctx_dir = Path(tmp)
            print(f"\nbench: scenario {key} ({name}) ...", flush=True)
            t0 = time.monotonic()
            ctx = Context(quick=args.quick, pin=pin, workdir=ctx_dir, profile=profile and key in ("1", "2"),
                          shared=shared)
            try:
                section = fn(ctx)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                failed = True
                traceback.print_exc()
                section = Section(key, name, notes=[f"scenario failed: {type(exc).__name__}: {exc}"[:2000]])
                section.targets.append(Target("scenario ran", "failed", "completes", False))
            section.notes.append(f"scenario time: {time.monotonic() - t0:.0f} s")
            sections.append(section)
            print(report.console(section), flush=True)
    finally:
        if args.keep:
            print(f"bench: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - started
    targets = [t for s in sections for t in s.targets]
    print(f"\nbench: {sum(t.passed for t in targets)} of {len(targets)} targets pass; {elapsed:.0f} s")
    meta = {"command": command, "pinning": pin.describe(), "started": started, "elapsed_s": elapsed,
            "machine_info": machine}
    report.save(SAVED, sections, **meta)
    print(f"bench: figures saved in {SAVED} (re-render with --render {SAVED})")
    if output is not None and args.update and output.exists():
        output.write_text(report.splice(output.read_text(), sections, command=command, started=started))
        print(f"bench: updated scenario(s) {', '.join(chosen)} in {output}")
    elif output is not None:
        analysis = ANALYSIS.read_text() if ANALYSIS.exists() else ""
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report.markdown(sections, analysis=analysis, **meta))  # type: ignore[arg-type]
        print(f"bench: wrote {output}")
    return 1 if failed else 0

