"""Every benchmark area on the old code and on this tree, back to back, figures side by side.

``python -m bench.compare [--quick] [--before DIR] [--after DIR] [--repeat N] [--pass=FLAG] [AREA ...]``

For each area (default: all of ``python -m bench``), ``python -m bench AREA`` runs in the
old tree (``--before``, default ``../before`` beside this repository: a ``git worktree`` of
the starting commit) and then in this tree, each in its own process with the shared venv's
interpreter, so load drift over a long run hits both sides of an area alike. With
``--repeat N`` every area runs N times per side in ABBA order and the median of each figure
is kept. Each side runs with ``PYTHONPATH`` set to its own tree, so ``import bridge`` there
and every process its benchmarks start (Celery workers, ``bridge serve``, the endpoint
children) load that tree's code, not the editable install's; a check before the first run
proves it (the old tree gets a ``bridge_plugins -> plugins`` link, as the install maps it).

The figures are read from what each area prints (bench/_figures.py) and shown as one table:
area, figure, before, after, after/before, and ``WORSE`` where the after is more than
``--threshold`` (10 %) worse. ``control`` rows measure a third-party baseline (the runpod
SDK, plain Celery tasks) that the change cannot touch: their spread is the machine's noise.
Raw outputs, the load average beside every run, and ``figures.json`` go to ``--out``.
``--parse DIR`` prints the table again from a finished run's directory without running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import _figures
from bench.__main__ import AREAS

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("before", "after")


def load() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` shows them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def side_env(tree: Path) -> dict[str, str]:
    # PYTHONPATH beats the editable install (its finder comes after sys.path), and the
    # benches pass the environment on to every process they start.
    return {**os.environ, "PYTHONPATH": str(tree)}


def check_tree(tree: Path, side: str) -> None:
    """Fail unless ``bridge`` and ``bridge_plugins`` import from ``tree`` under its environment."""
    if not (tree / "bench" / "__main__.py").is_file() or not (tree / "bridge").is_dir():
        raise SystemExit(f"{side} tree {tree}: no bench/__main__.py or bridge/ there; for the old code, "
                         f"`git worktree add {tree} <commit>`")
    link = tree / "bridge_plugins"
    if side == "before" and not link.exists() and (tree / "plugins").is_dir():
        link.symlink_to("plugins")  # the editable install maps bridge_plugins to plugins/
        print(f"made the link {link} -> plugins, so that the old tree's plugins are imported")
    probe = "import bridge, bridge_plugins; print(bridge.__file__); print(bridge_plugins.__file__)"
    found = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=side_env(tree), capture_output=True,
                           text=True)
    paths = found.stdout.split()
    if found.returncode != 0 or len(paths) != 2 or not all(Path(p).resolve().is_relative_to(tree.resolve())
                                                           for p in paths):
        raise SystemExit(f"{side} tree {tree}: bridge imports from {paths or found.stderr.strip()}, "
                         f"not from the tree; check PYTHONPATH and the bridge_plugins link")
    print(f"{side:<6} {tree}: bridge from {paths[0]}")


def run_area(tree: Path, area: str, flags: list[str], out: Path, timeout: float | None) -> tuple[int, float]:
    """Run ``python -m bench AREA`` in ``tree`` into ``out``; (exit code, seconds)."""
    before_load, started = load(), time.monotonic()
    with out.open("w") as fh:
        fh.write(f"# {tree}: python -m bench {area} {' '.join(flags)}; start "
                 f"{datetime.now(timezone.utc):%H:%M:%S} UTC, load {before_load}\n")
        fh.flush()
        # its own session: on a timeout the whole tree of processes it started goes too
        proc = subprocess.Popen([sys.executable, "-m", "bench", area, *flags], cwd=tree, env=side_env(tree),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
            fh.write(f"\n# killed after {timeout:g} s\n")
        seconds = time.monotonic() - started
        fh.write(f"\n# exit {code} after {seconds:.0f} s, load {load()}\n")
    return code, seconds


def collect(out: Path, areas: list[str]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """area -> side -> figure name -> values over repeats, from the outputs saved in ``out``."""
    found: dict[str, dict[str, dict[str, list[float]]]] = {}
    for area in areas:
        for side in SIDES:
            for path in sorted(out.glob(f"{area}.{side}.*.txt")):
                for fig in _figures.parse(area, path.read_text()):
                    found.setdefault(area, {}).setdefault(side, {}).setdefault(fig.name, []).append(fig.value)
    return found


def describe(areas: list[str], out: Path) -> dict[tuple[str, str], _figures.Figure]:
    """One Figure per (area, name), for its direction and control flag."""
    kinds: dict[tuple[str, str], _figures.Figure] = {}
    for area in areas:
        for path in sorted(out.glob(f"{area}.*.txt")):
            for fig in _figures.parse(area, path.read_text()):
                kinds.setdefault((area, fig.name), fig)
    return kinds


def worse_by(fig: _figures.Figure, before: float, after: float) -> float:
    """How many times worse the after is (1.0 = same, below 1 = better)."""
    if fig.better == "higher":
        before, after = after, before
    if before == after:
        return 1.0
    return after / before if before else float("inf")


def table(areas: list[str], out: Path, threshold: float) -> tuple[list[str], list[dict[str, object]], int]:
    """The comparison as printed lines, as records, and the number of figures flagged."""
    values, kinds = collect(out, areas), describe(areas, out)
    rows: list[tuple[str, str, str, str, str, str]] = [("area", "figure", "before", "after", "after/before", "flag")]
    records: list[dict[str, object]] = []
    flagged = 0
    for area in areas:
        sides = values.get(area, {})
        names = list(dict.fromkeys([*sides.get("before", {}), *sides.get("after", {})]))
        if not names and not any(out.glob(f"{area}.before.*.txt")):
            rows.append((area, "(an area the old tree does not have)", "", "", "", "new"))
        elif not names:
            rows.append((area, "(no figures: see the raw outputs)", "", "", "", "MISSING"))  # a run failed
            flagged += 1
        for name in names:
            fig = kinds[(area, name)]
            b_list, a_list = sides.get("before", {}).get(name), sides.get("after", {}).get(name)
            b = statistics.median(b_list) if b_list else None
            a = statistics.median(a_list) if a_list else None
            flag, ratio = "", ""
            if b is not None and a is not None:
                ratio = f"{a / b:.3f}" if b else ("1.000" if a == b else "inf")
                if fig.control:
                    flag = "control"
                elif fig.better and worse_by(fig, b, a) > 1 + threshold:
                    flag = f"WORSE >{threshold:.0%}"
            else:  # a new figure is no regression; a vanished one may hide one
                flag = "new" if b is None else "MISSING after"
            flagged += flag.startswith(("WORSE", "MISSING"))
            rows.append((area, name, "" if b is None else f"{b:g}", "" if a is None else f"{a:g}", ratio, flag))
            records.append({"area": area, "figure": name, "before": b, "after": a, "better": fig.better,
                            "control": fig.control, "flag": flag, "before_runs": b_list, "after_runs": a_list})
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join(c.rjust(w) if 2 <= i <= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                              strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines + [""] + noise(areas, records), records, flagged


def noise(areas: list[str], records: list[dict[str, object]]) -> list[str]:
    """Per area: figures compared, how many flagged, and how far its controls moved (the noise)."""
    lines = []
    for area in areas:
        mine = [r for r in records if r["area"] == area and r["before"] is not None and r["after"] is not None]
        moved = [abs(float(r["after"]) / float(r["before"]) - 1)  # type: ignore[arg-type]
                 for r in mine if r["control"] and r["before"]]
        worse = sum(str(r["flag"]).startswith("WORSE") for r in mine)
        spread = f"controls moved up to {max(moved):.0%} (median {statistics.median(moved):.0%})" if moved else \
            "no control figures"
        lines.append(f"{area:<9} {len(mine)} figures compared, {worse} worse by more than the threshold; {spread}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("areas", nargs="*", metavar="AREA", help=f"areas to run (default all: {' '.join(AREAS)})")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every area (a smoke run)")
    parser.add_argument("--before", type=Path, default=ROOT.parent / "before",
                        help="the old tree (default: ../before, a git worktree of the starting commit)")
    parser.add_argument("--after", type=Path, default=ROOT, help="the new tree (default: this repository)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side and area, ABBA order, medians kept")
    parser.add_argument("--threshold", type=float, default=0.10, help="flag an after worse by more (0.10 = 10 %%)")
    parser.add_argument("--pass", dest="passed", action="append", default=[], metavar="FLAG",
                        help="a flag for every area run, e.g. --pass=--only=b (python -m bench takes "
                             "only -flags, so give values with =)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds one area run may take")
    parser.add_argument("--out", type=Path, default=None,
                        help="where raw outputs go (default /work/bench-runs/compare-<UTC time>, else /tmp)")
    parser.add_argument("--parse", type=Path, metavar="DIR", help="only print the table of a finished run in DIR")
    args = parser.parse_args(argv)
    areas = args.areas or AREAS
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        parser.error(f"unknown area(s) {', '.join(unknown)}; choose from {', '.join(AREAS)}")

    if args.parse:
        out = args.parse
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = Path("/work/bench-runs") if Path("/work/bench-runs").is_dir() else Path("/tmp")
        out = args.out or base / f"compare-{stamp}{'-quick' if args.quick else ''}"
        out.mkdir(parents=True, exist_ok=True)
        trees = {"before": args.before.resolve(), "after": args.after.resolve()}
        for side, tree in trees.items():
            check_tree(tree, side)
        flags = (["--quick"] if args.quick else []) + args.passed
        log = (out / "runs.txt").open("a")
        started = time.monotonic()
        for area in areas:
            for rep in range(args.repeat):
                for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                    if not (trees[side] / "bench" / f"{area}.py").is_file():
                        print(f"{area:<9} {side:<6} not in this tree: nothing to compare", flush=True)
                        continue
                    line_load = load()
                    code, seconds = run_area(trees[side], area, flags, out / f"{area}.{side}.{rep}.txt",
                                             args.timeout)
                    line = (f"{area:<9} {side:<6} #{rep + 1}  exit {code}  {seconds:6.0f} s  "
                            f"load {line_load} -> {load()}")
                    print(line, flush=True)
                    log.write(line + "\n")
                    log.flush()
        total = f"all runs: {time.monotonic() - started:.0f} s; outputs in {out}"
        print(total)
        log.write(total + "\n")
        log.close()

    lines, records, flagged = table(areas, out, args.threshold)
    print()
    print("\n".join(lines))
    print(f"\n{flagged} figure(s) flagged (WORSE by more than {args.threshold:.0%}, or MISSING after); "
          "'control' rows measure a third-party baseline: their spread is the machine's noise.")
    (out / "figures.json").write_text(json.dumps(records, indent=1))
    return 1 if flagged else 0


if __name__ == "__main__":
    raise SystemExit(main())
