"""Job states, defined once: :class:`JobStatus`, which are terminal, and which error a job
that ended in a failed terminal state raises (:data:`FAILURE_ERRORS`).

(This was ``bridge/status.py``; ``bridge.status`` is also the name of a Celery task, so the
module was renamed. ``bridge.status`` still re-exports everything here.)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from bridge.errors import JobCancelled, JobError, JobFailed, JobTimedOut

__all__ = ["FAILURE_ERRORS", "TERMINAL", "JobStatus", "is_terminal"]


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

#: The error class of each failed terminal status (from each class's own ``status``). Keys
#: are ``JobStatus`` members, which also match the plain wire strings ("FAILED").
FAILURE_ERRORS: Mapping[JobStatus, type[JobError]] = {
    JobStatus(cls.status): cls for cls in (JobFailed, JobCancelled, JobTimedOut)
}


def is_terminal(status: str) -> bool:
    return status in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
