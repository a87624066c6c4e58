"""Telling one endpoint-wide mistake from many per-input failures.

A wrong API key, an unknown endpoint id or a base URL that is not a RunPod endpoint makes
every ``/run`` fail the same way. Recording each input as FAILED would turn one mistake into
N failures (and a re-run would skip them all), so a batch watches its ``/run`` answers and
stops when they show the endpoint as a whole is wrong:

- ``repeats`` (3) identical 401/403/404 answers with no job accepted in between;
- a connection error or a non-RunPod answer before the first job was accepted (later outages
  are retried as usual: the endpoint was reachable, so they are taken to be passing).

The :class:`Tripwire` is fed by the in-process engine (one exception per answer) and by the
Celery producer (one recorded error per input); once tripped, :attr:`Tripwire.error` is the
error the batch ends with, of the same class as the answers (so the CLI exits 3, 4 or 5).
"""

from __future__ import annotations

from bridge import errors

#: Identical 401/403/404 answers, with no accepted job in between, that stop a batch.
REPEATS = 3

#: Answers that can only mean the endpoint, key or URL is wrong, when they repeat.
REPEATED = (errors.AuthenticationError, errors.NotFound)
#: Answers that mean the base URL is wrong, when no job was accepted yet.
UNREACHABLE = (errors.TransportError, errors.MalformedResponse)

_HINTS = {
    errors.AuthenticationError: "the API key (RUNPOD_API_KEY) and that it may use this endpoint",
    errors.NotFound: "the endpoint id (-e) and the base URL (--base-url, RUNPOD_ENDPOINT_BASE_URL)",
    errors.TransportError: "the base URL (--base-url, RUNPOD_ENDPOINT_BASE_URL) and that the endpoint is up",
    errors.MalformedResponse: "that the base URL points at a RunPod-compatible endpoint (…/v2)",
}


def is_endpoint_wide(cls: type[BaseException] | None) -> bool:
    """True for the error classes the tripwire looks at."""
    return cls is not None and issubclass(cls, REPEATED + UNREACHABLE)


class Tripwire:
    """Counts ``/run`` answers; :meth:`note` returns True once the batch must stop."""

    def __init__(self, endpoint_id: str | None, repeats: int = REPEATS) -> None:
        self.endpoint_id = endpoint_id
        self.repeats = repeats
        self.accepted = 0
        self.error: errors.BridgeError | None = None
        self._streak: type[BaseException] | None = None
        self._count = 0

    @property
    def tripped(self) -> bool:
        return self.error is not None

    def accepted_job(self) -> None:
        """A job was accepted: the endpoint works, and any streak of refusals is broken."""
        self.accepted += 1
        self._streak, self._count = None, 0

    def note(self, cls: type[BaseException], message: str, status_code: int | None = None) -> bool:
        """One failed ``/run`` answer (its error class and message); True when the batch stops."""
        if self.error is not None:
            return True
        if issubclass(cls, REPEATED):
            if cls is self._streak:
                self._count += 1
            else:
                self._streak, self._count = cls, 1
            if self._count >= self.repeats:
                self._trip(cls, f"{self.repeats} /run requests in a row were refused with no job accepted",
                           message, status_code)
        elif issubclass(cls, UNREACHABLE) and self.accepted == 0:
            why = ("the endpoint could not be reached" if issubclass(cls, errors.TransportError)
                   else "the base URL did not answer like a RunPod endpoint")
            self._trip(cls, why + " before any job was accepted", message, status_code)
        return self.error is not None

    def note_error(self, exc: errors.BridgeError) -> bool:
        return self.note(type(exc), exc.message, getattr(exc, "status_code", None))

    def _trip(self, cls: type[BaseException], why: str, message: str, status_code: int | None) -> None:
        text = f"batch stopped, nothing more submitted: {why} (last answer: {errors.scrub(message)})"
        hint = next((h for k, h in _HINTS.items() if issubclass(cls, k)), None)
        # The same class as the answers, so the CLI's exit code (3/4/5) names the cause.
        args = (status_code,) if issubclass(cls, errors.EndpointError) else ()
        exc = cls(text, None, self.endpoint_id, hint, *args)
        self.error = exc if isinstance(exc, errors.BridgeError) else errors.BridgeError(text, None, None, hint)


__all__ = ["REPEATS", "Tripwire", "is_endpoint_wide"]
