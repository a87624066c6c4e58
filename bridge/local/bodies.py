"""Strict JSON at the local endpoint's edges: request bodies are read within a size limit
and a deadline, and parsed as strict JSON (no ``NaN``/``Infinity``, no number that only
fits as an infinite float, at most :data:`MAX_DEPTH` levels of arrays and objects);
answers are written with the same rules, so a client never receives text that is not JSON.
Values a handler produces are checked with :func:`json_problem` when they are recorded.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import operator
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # handlers import bridge.local (progress_update) without aiohttp
    from aiohttp import web

#: Deepest nesting of arrays and objects a request body may have (``{"input": {...}}``
#: counts the outer object: the input may nest one level less). Python's parser recurses
#: and failed with a 500 on deep bodies; serde_json uses the same limit.
MAX_DEPTH = 128
#: Seconds a request body may take to arrive once its head has (``--body-timeout``).
BODY_TIMEOUT = 60.0
#: Seconds a request head may take (``--header-timeout``); see LocalServer.
HEADER_TIMEOUT = 15.0

#: ``json.dumps`` that refuses NaN and Infinity instead of writing them.
dumps = functools.partial(json.dumps, allow_nan=False)

# A JSON string literal (the unrolled form stays linear on long strings).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class _NotStrict(ValueError):
    """Valid to Python's parser, not to JSON: NaN, Infinity, an out-of-range number."""


class BodyError(Exception):
    """A request body the endpoint refuses: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


async def read_body(request: web.Request, limit: int, timeout: float, too_big: str) -> bytes:
    """The whole body, at most ``limit`` bytes (413 with ``too_big``), within ``timeout`` s (408)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, too_big)

    async def read() -> bytes:
        raw = bytearray()
        async for chunk in request.content.iter_any():
            raw.extend(chunk)
            if len(raw) > limit:
                raise BodyError(413, too_big)
        return bytes(raw)

    try:
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise BodyError(408, f"request body not received within {timeout:g} s of its headers; "
                             "send the whole body at once") from None


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when ``raw`` nests arrays/objects more than ``limit`` levels deep.

    Linear and without recursion, in C-level iterators: string literals are cut out, each
    bracket becomes 2 (opening) or 0 (closing), and the running sum minus the position is
    the depth (about 35 ms per MB of brackets; a body with few brackets is answered at once).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    steps = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_STEPS)
    return max(map(operator.sub, itertools.accumulate(steps), itertools.count(1)), default=0) > limit


def _no_constant(name: str) -> Any:
    raise _NotStrict(f"{name} is not JSON (send null or a string)")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotStrict(f"the number {text[:40]} is out of range (send it as a string)")
    return value


def loads(raw: bytes, what: str = "request body") -> Any:
    """Parse strict JSON or raise :class:`BodyError` 400 saying what is wrong."""
    if too_deep(raw):
        try:  # malformed text can look deep (unbalanced brackets): tell the two apart
            json.loads(raw)
        except ValueError:
            raise BodyError(400, f"{what} is not valid JSON") from None
        except RecursionError:
            pass
        raise BodyError(400, f"{what} nests arrays/objects deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:  # not reached after too_deep(); kept so a 500 cannot come back
        raise BodyError(400, f"{what} nests arrays/objects deeper than {MAX_DEPTH} levels") from None
    except _NotStrict as exc:
        raise BodyError(400, f"{what} is not strict JSON: {exc}") from None
    except ValueError:
        raise BodyError(400, f"{what} is not valid JSON") from None


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be sent as JSON (NaN, Infinity, a non-JSON type, too deep), or None."""
    try:
        dumps(value)
    except ValueError:
        return "it holds NaN or Infinity, which are not JSON (use null or a string)"
    except TypeError as exc:
        return str(exc)
    except RecursionError:
        return "it is nested too deeply to encode"
    return None


def response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``web.json_response`` with strict encoding."""
    from aiohttp import web

    return web.json_response(body, status=status, headers=headers, dumps=dumps)
