"""The old name of :mod:`bridge.job_status`, kept so ``from bridge.status import JobStatus``
and pickles naming ``bridge.status.JobStatus`` keep working. New code imports
``bridge.job_status`` (``bridge.status`` is also the name of a Celery task)."""

from bridge.job_status import FAILURE_ERRORS, TERMINAL, JobStatus, is_terminal

__all__ = ["FAILURE_ERRORS", "TERMINAL", "JobStatus", "is_terminal"]
