"""The old private path of :mod:`bridge.wire`, kept so existing imports keep working."""

from __future__ import annotations

from bridge.wire import *  # noqa: F403
from bridge.wire import (  # noqa: F401  (the names other modules import from here)
    CONNECT_TIMEOUT,
    KNOWN_STATUSES,
    READ_TIMEOUT,
    Call,
    Wire,
    is_known_status,
    known_keys,
    remember_key,
    request_body,
    scrub_value,
    terminal,
)
