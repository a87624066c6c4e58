"""``openai_chat``: accept OpenAI chat-completions requests for RunPod's vLLM worker and
answer in OpenAI's shapes.

Input (``tryfirst``, so other plugins see the worker's input): a task input that is an
OpenAI chat-completions body (has ``messages``, no ``sampling_params``/``prompt``/
``openai_route``) is rewritten; other inputs pass through untouched.

* mode ``native`` (default): ``{"messages", "sampling_params", "stream"}``, which both worker
  generations accept; text-only messages; fields with no native equivalent (``tools``,
  ``response_format`` ...) reject the job before submit, naming the field.
* mode ``openai``: ``{"openai_route": "/v1/chat/completions", "openai_input": <body>}``, the
  worker's OpenAI-compatible mode (everything vLLM supports).

Output (``trylast``, so other plugins see the worker's output) of such a task becomes one
``chat.completion`` (id ``chatcmpl-<job id>``); each streamed chunk becomes a
``chat.completion.chunk`` (native mode: one chunk per worker batch; openai mode: a *list* of
chunks parsed from the worker's SSE text). The first chunk carries ``role``; the
``finish_reason`` and usage chunks are in the final output (``stream_tail`` builds them).

Options: ``endpoints`` (default all), ``mode``, ``model`` (reported when the request has
none), ``default_max_tokens`` (sent when the request has none; else the legacy worker's
default, 100, applies). What the input transform learnt (model, created, max_tokens) is kept
in ``ctx.meta["openai_chat"]``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bridge import hookimpl
from bridge.errors import ConfigurationError, JobFailed, JobRejected

from ._openai_map import (
    SSE_DONE,
    MappingError,
    is_chat_request,
    native_chunk_to_openai,
    output_to_completion,
    parse_sse,
    request_to_native,
    stream_tail,
    to_sse,
)
from ._options import endpoint_filter

__all__ = ["SSE_DONE", "OpenAIChatPlugin", "stream_tail", "to_sse"]

_META = "openai_chat"
_FIRST = "openai_chat_first_sent"
_SSE_REST = "openai_chat_sse_rest"


class OpenAIChatPlugin:
    """The registered plugin object; see the module docstring for options."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.mode = str(options.get("mode", "native"))
        if self.mode not in ("native", "openai"):
            raise ConfigurationError(
                f"plugin 'openai_chat': mode {self.mode!r} is not 'native' or 'openai'", None, None,
                "BRIDGE_PLUGIN_OPENAI_CHAT_MODE",
            )
        self.model = str(options.get("model", "unknown"))
        raw_max = options.get("default_max_tokens")
        self.default_max_tokens = int(raw_max) if raw_max not in (None, "") else None
        self.endpoints = endpoint_filter(options)

    def _applies(self, ctx: Any) -> bool:
        return self.endpoints is None or ctx.endpoint_id in self.endpoints

    @hookimpl(tryfirst=True)
    def bridge_transform_input(self, ctx: Any, input: Any) -> Any:
        if not self._applies(ctx) or not is_chat_request(input):
            return None
        stream_options = input.get("stream_options") or {}
        max_tokens = input.get("max_completion_tokens", input.get("max_tokens", self.default_max_tokens))
        ctx.meta[_META] = {
            "mode": self.mode,
            "model": input.get("model") or self.model,
            "created": int(time.time()),
            "max_tokens": max_tokens,
            "include_usage": bool(isinstance(stream_options, Mapping) and stream_options.get("include_usage")),
        }
        if self.mode == "openai":
            return {"openai_route": "/v1/chat/completions", "openai_input": dict(input)}
        try:
            return request_to_native(input, self.default_max_tokens)
        except MappingError as exc:
            raise JobRejected(
                f"plugin 'openai_chat': the request cannot be mapped to the worker's input: at {exc.path}: {exc.problem}",
                ctx.job_id, ctx.endpoint_id, "the OpenAI request field named, or BRIDGE_PLUGIN_OPENAI_CHAT_MODE=openai",
            ) from exc

    def _ids(self, ctx: Any, info: Mapping[str, Any]) -> dict[str, Any]:
        created = info.get("created") or ctx.state.setdefault("openai_chat_created", int(time.time()))
        return {
            "completion_id": f"chatcmpl-{ctx.job_id or ctx.task_id or 'local'}",
            "model": info.get("model") or self.model,
            "created": created,
        }

    @hookimpl(trylast=True)
    def bridge_transform_output(self, ctx: Any, output: Any) -> Any:
        info = ctx.meta.get(_META)
        if info is None or not self._applies(ctx):
            return None
        try:
            return output_to_completion(output, max_tokens=info.get("max_tokens"), **self._ids(ctx, info))
        except MappingError as exc:
            raise JobFailed(
                "plugin 'openai_chat': the worker returned an error", ctx.job_id, ctx.endpoint_id,
                "the worker's logs and the error field", exc.problem,
            ) from exc

    @hookimpl(trylast=True)
    def bridge_transform_chunk(self, ctx: Any, chunk: Any) -> Any:
        info = ctx.meta.get(_META)
        if info is None or not self._applies(ctx):
            return None
        if isinstance(chunk, str):  # openai mode: SSE text, split anywhere
            chunks, rest, _done = parse_sse(ctx.state.get(_SSE_REST, "") + chunk)
            ctx.state[_SSE_REST] = rest
            return chunks
        first = not ctx.state.get(_FIRST)
        mapped = native_chunk_to_openai(chunk, first=first, **self._ids(ctx, info))
        if mapped is not None:
            ctx.state[_FIRST] = True
        return mapped
