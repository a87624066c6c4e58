"""Parity (issue #10): every scenario of the table (parity_table.py) runs through every way of
running a job (parity_drivers.py: the Celery task, the in-process batch, ``bridge run``,
``AsyncioEndpoint`` and ``Endpoint`` with ``plugins=True``), against the real local endpoint
behind a recording proxy, with a recording plugin loaded by every driver.

For every (scenario, driver): the outcome (output, or error class and message), the
requests the endpoint saw, the hook calls and the remote jobs' final statuses must be the
table's. For every scenario: all drivers must agree with each other on all of that. Each
pair runs once per module; both tests read the same observation.
"""

from __future__ import annotations

import re

import pytest

from .parity_drivers import DRIVERS, Observation, Rig, observe
from .parity_table import BY_NAME, SCENARIOS, Expected

_SEEN: dict[tuple[str, str], Observation] = {}


def _observed(rig: Rig, scenario: str, driver: str) -> Observation:
    key = (scenario, driver)
    if key not in _SEEN:
        _SEEN[key] = observe(rig, BY_NAME[scenario], driver)
    return _SEEN[key]


def _against_table(o: Observation, e: Expected) -> list[str]:
    """What differs from the table, one line per field."""
    wrong: list[str] = []
    got = o.outcome
    if e.error is None:
        if got.error is not None or got.output != e.output:
            wrong.append(f"outcome: expected output {e.output!r}, got {got}")
    elif got.error != e.error or (e.message is not None and not re.search(e.message, got.message or "")):
        shown = f"output {got.output!r}" if got.error is None else f"{got.error}: {got.message!r}"
        wrong.append(f"outcome: expected {e.error} with a message matching {e.message!r}, got {shown}")
    for name in ("requests", "events", "remote"):
        want, have = getattr(e, name), getattr(o, name)
        if tuple(want) != tuple(have):
            wrong.append(f"{name}:\n    expected {list(want)}\n    got      {list(have)}")
    return wrong


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_each_driver_does_what_the_table_says(parity_rig: Rig, scenario: str, driver: str) -> None:
    observed = _observed(parity_rig, scenario, driver)
    wrong = _against_table(observed, BY_NAME[scenario].expect)
    assert not wrong, f"{scenario} through {driver}:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_all_drivers_agree(parity_rig: Rig, scenario: str) -> None:
    observed = {driver: _observed(parity_rig, scenario, driver) for driver in DRIVERS}
    reference_name, reference = next(iter(observed.items()))
    report: list[str] = []
    for field in ("outcome", "requests", "events", "remote", "remote_inputs"):
        values = {driver: getattr(o, field) for driver, o in observed.items()}
        if len({repr(v) for v in values.values()}) > 1:
            report.append(f"{field}:")
            report += [f"    {driver:8} {value!r}" for driver, value in values.items()]
    assert not report, (f"{scenario}: the drivers differ (first is {reference_name}: {reference.outcome})\n  "
                        + "\n  ".join(report))
