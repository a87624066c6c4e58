"""The figures each ``python -m bench.<area>`` prints, read back from its text output.

``bench.compare`` runs the same area of two trees (the old code and this one) and compares
what they print. The parsers read the human tables the areas already print, so that an old
tree, which cannot be changed, is read the same way as this one. A figure says which way is
better (``lower``/``higher``; ``""`` when neither, shown only) and whether it measures a
third-party baseline (``control``: the runpod SDK, plain Celery tasks), which the refactor
cannot change and so shows the machine's noise between the two runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

N = r"[-+]?\d[\d,]*(?:\.\d+)?"  # a number as the areas print it: 1,234.5


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    better: str = "lower"  # "lower", "higher" or "" (shown, never flagged)
    control: bool = False


def num(text: str) -> float:
    """The first number in ``text`` ("1,234.5 ms" -> 1234.5)."""
    match = re.search(N, text)
    if match is None:
        raise ValueError(f"no number in {text!r}")
    return float(match.group().replace(",", ""))


def _matches(pattern: str, text: str) -> Iterator[re.Match[str]]:
    return re.finditer(pattern, text, re.M)


def client(text: str) -> list[Figure]:
    out = []
    row = rf"^(\S+)\s+((?:bridge|runpod SDK) (?:asyncio|sync))\s+({N})\s+{N}\s+({N})\s+({N})\s+({N})\s+({N})\s*$"
    for m in _matches(row, text):
        name, control = f"{m[1]} {m[2]}", m[2].startswith("runpod")
        for col, idx in (("wall s", 3), ("req/job", 4), ("status req/job", 5), ("notice p50 ms", 6),
                         ("notice p95 ms", 7)):
            out.append(Figure(f"{name}: {col}", num(m[idx]), control=control))
    return out


def local(text: str) -> list[Figure]:
    out = []
    for m in _matches(rf"^(.+?)\s+(bridge serve|runpod --rp_serve_api)\s+({N})\s+{N}\s+(\d+)/(\d+)", text):
        control = m[2].startswith("runpod")
        out.append(Figure(f"{m[1]} [{m[2]}]: wall s", num(m[3]), control=control))
        out.append(Figure(f"{m[1]} [{m[2]}]: completed", num(m[4]), "higher", control))
    return out


def celery(text: str) -> list[Figure]:
    out = []
    for m in _matches(rf"^\(a\) existing app, prefork -c 2: .*? jobs ({N}) s vs goal .*?\+ ({N})\) = .*?"
                      rf"ratio ({N}) of", text):
        out += [Figure("(a) bridge.run jobs: wall s", num(m[1])),
                Figure("(a) no-op tasks: wall s", num(m[2]), control=True),
                Figure("(a) ratio to (2 s + no-op)", num(m[3]))]
    for m in _matches(rf"^\s+the app's 10 tasks .*?all done ({N}) s into .*?peak RSS ({N}) MB", text):
        out += [Figure("(a) app's 10 tasks done after s", num(m[1])),
                Figure("(a) worker peak RSS MB", num(m[2]))]
    for m in _matches(rf"^\(b\) (\w+ -c \d+): .*? jobs ({N}) s vs goal 1.3 x \(({N}) \+ .*?ratio ({N}) -> "
                      rf"\w+; peak RSS ({N}) MB.*?status requests/job ({N})", text):
        out += [Figure(f"(b) {m[1]}: bridge.run wall s", num(m[2])),
                Figure(f"(b) {m[1]}: no-op wall s", num(m[3]), control=True),
                Figure(f"(b) {m[1]}: ratio to (no-op + job)", num(m[4])),
                Figure(f"(b) {m[1]}: worker peak RSS MB", num(m[5])),
                Figure(f"(b) {m[1]}: status requests/job", num(m[6]))]
    pool = ""
    for m in _matches(rf"^\(c\) (\w+ -c \d+): .*? jobs ({N}) s vs .*? no-op ({N}) s .*?: ({N}) x"
                      r"|^\s+CPU ms per job \(no-op -> bridge.run\): (.*)$", text):
        if m[1]:
            pool = m[1]
            out += [Figure(f"(c) {pool}: bridge.run zero-work wall s", num(m[2])),
                    Figure(f"(c) {pool}: no-op wall s", num(m[3]), control=True),
                    Figure(f"(c) {pool}: ratio to no-op", num(m[4]))]
        else:
            for proc, noop, ours in re.findall(rf"(\w+) ({N}) -> ({N})", m[5]):
                out.append(Figure(f"(c) {pool}: CPU ms/job {proc}", num(ours)))
                if proc == "worker":
                    out.append(Figure(f"(c) {pool}: no-op CPU ms/task worker", num(noop), control=True))
    for m in _matches(rf"^\(d\) .*?: bridge ({N}) s, naive SDK task ({N}) s", text):
        out += [Figure("(d) bridge.run wall s", num(m[1])),
                Figure("(d) naive SDK task wall s", num(m[2]), control=True)]
    return out


def _space_tables(text: str) -> Iterator[tuple[str, list[str], list[list[str]]]]:
    """Tables printed as a title, a header, a ``----  ----`` rule and rows, columns two spaces apart."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i >= 2 and re.fullmatch(r"-+(  -+)+", line.strip()):
            rows = []
            for row in lines[i + 1:]:
                if not row.strip() or row.startswith("   "):
                    break
                rows.append(re.split(r"\s{2,}", row.strip()))
            yield lines[i - 2].strip(), re.split(r"\s{2,}", lines[i - 1].strip()), rows


def plugins(text: str) -> list[Figure]:
    skip = {"job vs empty", "chunk vs empty", "jobs/s (best)", "ratio (best)", "hook CPU (from 1.)"}
    out = []
    for title, head, rows in _space_tables(text):
        number = title.split(".", 1)[0]
        for row in rows:
            for col, cell in zip(head[1:], row[1:], strict=False):
                if col not in skip:
                    out.append(Figure(f"{number}. {row[0]}: {col}", num(cell)))
    return out


def _pipe_rows(text: str) -> Iterator[list[str]]:
    """Rows of a markdown table (``| a | b |``), header and rule left out."""
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|-") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells and cells[0] not in ("measure", "scenario"):
                yield cells


def batch(text: str) -> list[Figure]:
    out = []
    poll = ""
    for measure, ours, base, *_ in _pipe_rows(text):
        # (b) runs twice, once per poll interval: only its first row names the interval
        found = re.search(r", poll \S+ s", measure)
        poll = found.group() if found else poll if measure.startswith("(b)") else ""
        measure = measure if found or not poll else measure + poll
        names = measure.split(" / ")
        parts = [p for p in ours.split(" / ")] if len(names) > 1 else [ours]
        part = (names[0].rsplit(": ", 1)[0] + ": " if ": " in names[0]
                else measure.split(") ", 1)[0] + ") " if measure.startswith("(") else "")
        for k, (name, value) in enumerate(zip(names, parts, strict=False)):
            name = name if k == 0 else part + name
            better = "higher" if "received" in name else "" if "429s" in name else "lower"
            out.append(Figure(name, num(value), better))  # "1000/1000" received: the first number
        if "after imports" in base:
            out.append(Figure(f"{measure}, after imports", num(base)))
        elif measure.startswith(("(b)", "(c)")) and re.search(N, base):  # the SDK's figure
            out.append(Figure(f"{measure} [SDK]", num(base), "higher" if "received" in measure else "lower",
                              control=True))
    return out


def workers(text: str) -> list[Figure]:
    out = [Figure(f"{m[1]}: seconds", num(m[2]))
           for m in _matches(rf"^(.+?)\s+\d+\s+({N})\s+{N}\s+{N}x$", text)]
    out += [Figure(f"idle {m[1]}: req/s", num(m[2]), "" if "[baseline]" in m[1] else "lower")
            for m in _matches(rf"^((?:long polls|job-take).*?\])\s+({N})\s", text)]
    return out


def embedded(text: str) -> list[Figure]:
    out = []
    for m in _matches(rf"^(system|wheel|fakeredis)\s+\S+\s+({N})\s+{N}\s+({N})\s+{N}\s*$", text):
        out += [Figure(f"{m[1]}: fan-out s", num(m[2])), Figure(f"{m[1]}: whole demo s", num(m[3]))]
    return out


def faults(text: str) -> list[Figure]:
    out = []
    for m in _matches(rf"^\s+(own pipeline \(now\)|shared pipeline \(baseline\)|one command per job)\s+"
                      rf"({N})\s+({N})\s+{N} \|\s+({N})\s+({N})\s+{N}\s*$", text):
        for col, idx in (("window p50 ms", 2), ("window p99 ms", 3), ("id write p50 ms", 4),
                         ("id write p99 ms", 5)):
            out.append(Figure(f"submit window, {m[1]}: {col}", num(m[idx])))
    for m in _matches(rf"^(\w+)\s+Redis down \S+ s: (\d+)/\d+ correct, (\d+) failed, (\d+) unfinished, "
                      rf"(\d+) possible double submits .*?, (\d+) remote jobs, last result ({N}) s", text):
        out += [Figure(f"{m[1]} outage: correct", num(m[2]), "higher"),
                Figure(f"{m[1]} outage: failed", num(m[3])),
                Figure(f"{m[1]} outage: unfinished", num(m[4])),
                Figure(f"{m[1]} outage: possible double submits", num(m[5])),
                Figure(f"{m[1]} outage: remote jobs", num(m[6])),
                Figure(f"{m[1]} outage: last result after Redis back, s", num(m[7]))]
    for m in _matches(r"^(\w+)\s+Redis down \S+ s: bridge batch --celery exit (\d+): (\d+)/\d+ correct lines "
                      r".*?, (\d+) possible double submits, (\d+) remote jobs", text):
        out += [Figure(f"{m[1]} outage, batch --celery: exit code", num(m[2])),
                Figure(f"{m[1]} outage, batch --celery: correct lines", num(m[3]), "higher"),
                Figure(f"{m[1]} outage, batch --celery: possible double submits", num(m[4])),
                Figure(f"{m[1]} outage, batch --celery: remote jobs", num(m[5]))]
    return out


def relay(text: str) -> list[Figure]:
    out = []
    for cells in _pipe_rows(text):
        if len(cells) < 12:
            continue
        name = f"{cells[0]}, {cells[1]} readers"
        received, sent = (num(x) for x in cells[3].split("/"))
        out += [Figure(f"{name}: chunks lost", sent - received),
                Figure(f"{name}: p50 ms", num(cells[5])),
                Figure(f"{name}: p99 ms", num(cells[6])),
                Figure(f"{name}: max ms", num(cells[7]), ""),
                Figure(f"{name}: relay peak RSS MB", num(cells[8].split("/")[-1])),
                Figure(f"{name}: KB/reader", num(cells[9])),
                Figure(f"{name}: Redis conns", num(cells[10])),
                Figure(f"{name}: connect s", num(cells[11]))]
    out += [Figure(f"{m[1]}: p99 ratio big/100 readers", num(m[2]))
            for m in _matches(rf"^(same traffic|all busy): p99 .*? = ({N})x", text)]
    return out


PARSERS: dict[str, Callable[[str], list[Figure]]] = {
    "client": client, "local": local, "celery": celery, "plugins": plugins, "batch": batch,
    "workers": workers, "embedded": embedded, "faults": faults, "relay": relay,
}


def parse(area: str, text: str) -> list[Figure]:
    """The figures ``python -m bench.<area>`` printed in ``text`` (none for an unknown area)."""
    parser = PARSERS.get(area)
    figures: list[Figure] = []
    seen: dict[str, int] = {}
    for fig in parser(text) if parser else []:
        seen[fig.name] = seen.get(fig.name, 0) + 1  # a name printed twice stays two figures
        figures.append(fig if seen[fig.name] == 1 else replace(fig, name=f"{fig.name} #{seen[fig.name]}"))
    return figures
