"""``python -m bench.compare``: the figures it reads from each area's output, and a back-to-back
run over two small trees proving each side (and the processes it starts) runs its own code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _figures  # noqa: E402
from bench.compare import worse_by  # noqa: E402

CLIENT = """\
workload   client            wall s   jobs/s  req/job status/job notice p50 ms   p95 ms
---------------------------------------------------------------------------------------
zero-work  bridge asyncio      {wall}   1675.3     2.00       1.00          10.9     12.4
zero-work  runpod SDK asyncio    {sdk}   1219.6     3.00       2.00          22.9     39.5
2s         bridge sync         2.12     47.1     2.00       {status}           0.4      1.2
"""

SAMPLES = {
    "local": """\
200 zero-work jobs, 20 in flight (async handler)           bridge serve               0.03    6411.4 200/200      1.2x
200 zero-work jobs, 20 in flight (async handler)           runpod --rp_serve_api      0.04    5403.2 199/200      1.0x
""",
    "celery": """\
summary
(a) existing app, prefork -c 2: 50 x 2 s jobs 2.10 s vs goal 1.5 x (2 + 0.57) = 3.85 s: ratio 0.82 of (2 s + no-op) -> MET (before: 241 s)
    the app's 10 tasks sent at 0.5 s: all done 0.54 s into the fan-out; last one +1.51 s before the first job finished -> MET (before: they waited 237 s); peak RSS 220 MB
(b) threads -c 8: 1000 x 3 s jobs 4.3 s vs goal 1.3 x (1.6 + 3) = 6.0 s: ratio 0.93 -> MET; peak RSS 112 MB vs 500 MB -> MET; status requests/job 1.00
(c) prefork -c 2: 500 zero-work jobs 1.31 s vs 500 no-op 1.14 s (medians of 3): 1.14 x vs goal 1.5 x -> MET
    CPU ms per job (no-op -> bridge.run): worker 0.80 -> 2.02, endpoint 0.00 -> 0.40, redis 0.20 -> 0.26, producer 0.78 -> 0.76
""",
    "plugins": """\
3. 300 zero-work jobs through gateway + local endpoint (1 rotated rounds)
plugins          median s  best s  jobs/s (best)  ratio (median)  ratio (best)  hook CPU (from 1.)  hook share
---------------  --------  ------  -------------  --------------  ------------  ------------------  ----------
0 plugins        0.31      0.31    972            1.000           1.000         0.0 ms              0.00%
5 no-op plugins  0.29      0.29    1,042          0.933           0.933         1.1 ms              0.37%
   The ratios include run-to-run noise
""",
    "batch": """\
| measure                                           | bridge  | baseline           | ratio  | goal      |
|---------------------------------------------------|---------|--------------------|--------|-----------|
| (a) failed jobs / 429s absorbed                   | 0 / 1   | 0                  |        | 0 failed  |
| (b) chunk latency p50, 50 streams, poll 0.5 s, ms | 143     | 551 (SDK stream()) | 0.26x  | <= 250 ms |
| (b) chunks received                               | 500/500 | 500/500            |        | all       |
| (b) chunk latency p50, 50 streams, poll 0.2 s, ms | 136     | 551 (SDK stream()) | 0.25x  | <= 250 ms |
| (b) chunks received                               | 499/500 | 500/500            |        | all       |
| (d) 20,000 jobs: wall s / failed                  | 7.5 / 0 |                    |        |           |
""",
    "faults": """\
  own pipeline (now)                  40.1    80.2    95.0 |         1.20    3.40    5.00
amd  Redis down 3 s: 300/300 correct, 0 failed, 0 unfinished, 0 possible double submits (0 logged), 300 remote jobs, last result 4.2 s after Redis was back (80 s)
amd  Redis down 3 s: bridge batch --celery exit 0: 300/300 correct lines (300 written), 0 possible double submits, 300 remote jobs
""",
    "relay": """\
| scenario | readers | chunks/s | chunks recv/sent | ended | p50 ms | p99 ms | max ms | relay RSS MB idle/conn/peak | KB/reader | Redis conns | connect s |
|---|---|---|---|---|---|---|---|---|---|---|---|
| same traffic | 2,000 | 200 | 1,990/2,000 | 2,000 | 1.5 | 7.5 | 20.0 | 40/60/62 | 10.2 | 2 | 0.8 |
same traffic: p99 2,000 readers / 100 readers = 1.25x (goal <= 2x: met)
""",
}


def figures(area: str, text: str) -> dict[str, _figures.Figure]:
    return {f.name: f for f in _figures.parse(area, text)}


def test_each_area_output_is_read_as_named_figures() -> None:
    client = figures("client", CLIENT.format(wall="0.06", sdk="0.08", status="1.00"))
    assert client["zero-work bridge asyncio: wall s"].value == 0.06
    assert client["zero-work runpod SDK asyncio: wall s"].control
    assert client["2s bridge sync: status req/job"].value == 1.0

    local = figures("local", SAMPLES["local"])
    assert local["200 zero-work jobs, 20 in flight (async handler) [runpod --rp_serve_api]: completed"].value == 199
    assert local["200 zero-work jobs, 20 in flight (async handler) [bridge serve]: completed"].better == "higher"

    celery = figures("celery", SAMPLES["celery"])
    assert celery["(a) bridge.run jobs: wall s"].value == 2.10
    assert celery["(a) no-op tasks: wall s"] == _figures.Figure("(a) no-op tasks: wall s", 0.57, control=True)
    assert celery["(a) worker peak RSS MB"].value == 220
    assert celery["(b) threads -c 8: status requests/job"].value == 1.0
    assert celery["(c) prefork -c 2: CPU ms/job worker"].value == 2.02
    assert celery["(c) prefork -c 2: no-op CPU ms/task worker"].value == 0.80

    plugins = figures("plugins", SAMPLES["plugins"])
    assert plugins["3. 5 no-op plugins: median s"].value == 0.29
    assert plugins["3. 5 no-op plugins: hook share"].value == 0.37
    assert "3. 5 no-op plugins: jobs/s (best)" not in plugins  # the same figure as best s

    batch = figures("batch", SAMPLES["batch"])
    assert batch["(a) 429s absorbed"].value == 1 and batch["(a) 429s absorbed"].better == ""
    assert batch["(b) chunks received, poll 0.2 s"].value == 499  # the second run of (b), by its interval
    assert batch["(b) chunk latency p50, 50 streams, poll 0.5 s, ms [SDK]"].control
    assert batch["(d) 20,000 jobs: failed"].value == 0

    faults = figures("faults", SAMPLES["faults"])
    assert faults["submit window, own pipeline (now): id write p99 ms"].value == 3.4
    assert faults["amd outage: last result after Redis back, s"].value == 4.2
    assert faults["amd outage, batch --celery: correct lines"].value == 300

    relay = figures("relay", SAMPLES["relay"])
    assert relay["same traffic, 2,000 readers: chunks lost"].value == 10
    assert relay["same traffic, 2,000 readers: relay peak RSS MB"].value == 62
    assert relay["same traffic: p99 ratio big/100 readers"].value == 1.25


def test_worse_by_follows_the_figure_s_direction() -> None:
    lower, higher = _figures.Figure("wall", 1.0), _figures.Figure("done", 1.0, "higher")
    assert worse_by(lower, 1.0, 1.2) == pytest.approx(1.2)
    assert worse_by(lower, 1.0, 0.8) == pytest.approx(0.8)
    assert worse_by(higher, 100, 80) == pytest.approx(1.25)
    assert worse_by(lower, 0, 1) == float("inf")  # 0 failed -> 1 failed
    assert worse_by(lower, 0, 0) == 1.0


MAIN = '''\
import pathlib, subprocess, sys
import bridge, bridge_plugins
tree = pathlib.Path(__file__).resolve().parent.parent
child = subprocess.run([sys.executable, "-c", "import bridge; print(bridge.__file__)"],
                       capture_output=True, text=True).stdout.strip()
print("bridge", bridge.__file__, "plugins", bridge_plugins.__file__, "child", child)
print((tree / "client.txt").read_text())
'''


def make_tree(root: Path, table: str, plugins_dir: str, areas: tuple[str, ...] = ("client",)) -> Path:
    for package in ("bridge", plugins_dir, "bench"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "bench" / "__main__.py").write_text(MAIN)
    for area in areas:
        (root / "bench" / f"{area}.py").write_text("")
    (root / "client.txt").write_text(table)
    return root


def test_compare_runs_each_tree_on_its_own_code_and_flags_what_got_worse(tmp_path: Path) -> None:
    # the old tree is a checkout (plugins/, linked as the install maps it); the new tree has the
    # bridge_plugins package itself; the new bridge's wall time is 50 % worse, its status
    # requests fewer, the SDK row (control) moved too but is never flagged, and a new row appears
    before = make_tree(tmp_path / "old", CLIENT.format(wall="0.10", sdk="0.08", status="2.00"), "plugins")
    extra = "2s         bridge asyncio      2.04     49.1     2.00       1.00           1.6      3.1\n"
    after = make_tree(tmp_path / "new", CLIENT.format(wall="0.15", sdk="0.16", status="1.00") + extra,
                      "bridge_plugins", areas=("client", "local"))  # local: an area only the new tree has
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench.compare", "client", "local", "--before", str(before),
               "--after", str(after), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # something was flagged

    for tree, side in ((before, "before"), (after, "after")):
        raw = (out / f"client.{side}.0.txt").read_text()
        line = next(x for x in raw.splitlines() if x.startswith("bridge "))
        _, own, _, plugins, _, child = line.split()
        assert Path(own).is_relative_to(tree) and Path(child).is_relative_to(tree), line
        assert Path(plugins).resolve().is_relative_to(tree), line
    assert (before / "bridge_plugins").is_symlink()

    rows = {r["figure"]: r for r in json.loads((out / "figures.json").read_text())}
    assert rows["zero-work bridge asyncio: wall s"]["flag"] == "WORSE >10%"
    assert (rows["zero-work bridge asyncio: wall s"]["before"], rows["zero-work bridge asyncio: wall s"]["after"]) \
        == (0.10, 0.15)
    assert rows["2s bridge sync: status req/job"]["flag"] == ""  # better
    assert rows["zero-work runpod SDK asyncio: wall s"]["flag"] == "control"
    assert rows["2s bridge asyncio: wall s"]["flag"] == "new"  # only after: not a regression
    assert "zero-work bridge asyncio: wall s" in done.stdout and "1.500" in done.stdout
    assert "local     before not in this tree" in done.stdout and not list(out.glob("local.before.*"))
    assert "(an area the old tree does not have)" in done.stdout

    again = subprocess.run([sys.executable, "-m", "bench.compare", "client", "local", "--parse", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert "zero-work bridge asyncio: wall s" in again.stdout
    assert again.stdout.strip() in done.stdout  # the same table, without running


def test_compare_refuses_a_tree_whose_bridge_is_not_its_own(tmp_path: Path) -> None:
    # a directory without bridge/ would silently run the editable install's code
    lone = tmp_path / "lone"
    (lone / "bench").mkdir(parents=True)
    (lone / "bench" / "__main__.py").write_text("")
    done = subprocess.run([sys.executable, "-m", "bench.compare", "client", "--before", str(lone),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no bench/__main__.py or bridge/" in done.stderr
