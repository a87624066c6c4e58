"""Job states, defined once: which are terminal, which error each terminal failure raises."""

from __future__ import annotations

import enum


class JobStatus(str, enum.Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @classmethod
    def parse(cls, value: str) -> JobStatus:
        """Map a wire status; the documented-but-unseen RUNNING counts as IN_PROGRESS."""
        if value == "RUNNING":
            return cls.IN_PROGRESS
        return cls(value)


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})


def is_terminal(status: str) -> bool:
    return status in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
