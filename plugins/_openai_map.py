"""Pure mapping functions between OpenAI chat-completions shapes and RunPod worker-vllm's
input/output (``/work/shared/reference/vllm-openai.md`` §3, §5-7). No I/O, no plugin state:
the ``openai_chat`` plugin calls these, and so can anyone else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SSE_DONE",
    "MappingError",
    "aggregate_chunks",
    "native_chunk_to_openai",
    "output_to_completion",
    "parse_sse",
    "request_to_native",
    "stream_tail",
    "to_sse",
]

SSE_DONE = "data: [DONE]\n\n"

# OpenAI fields that become sampling_params under the same name, and vLLM extras.
_SAMPLING = {"temperature", "top_p", "n", "seed", "presence_penalty", "frequency_penalty", "stop"}
_VLLM_EXTRAS = {
    "top_k", "min_p", "repetition_penalty", "min_tokens", "stop_token_ids", "ignore_eos",
    "skip_special_tokens", "include_stop_str_in_output", "spaces_between_special_tokens",
}
# No native equivalent: unknown SamplingParams keys would fail the job on the worker anyway.
_UNSUPPORTED = {
    "response_format", "tools", "tool_choice", "logprobs", "top_logprobs", "logit_bias",
    "functions", "function_call", "parallel_tool_calls", "audio", "modalities", "prediction",
    "reasoning_effort", "web_search_options",
}
_HANDLED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens"}
_IGNORED = {"user", "store", "metadata", "service_tier"}
_ROLES = {"system", "developer", "user", "assistant", "tool"}


class MappingError(ValueError):
    """The request cannot be mapped; ``path`` names the bad field (``messages[1].content``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def is_chat_request(value: Any) -> bool:
    """An OpenAI chat-completions body (has ``messages``), not already a worker input."""
    return (
        isinstance(value, Mapping)
        and "messages" in value
        and not any(k in value for k in ("sampling_params", "openai_route", "openai_input", "prompt"))
    )


def request_to_native(request: Mapping[str, Any], default_max_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI request → ``{"messages", "sampling_params", "stream"}`` for worker-vllm."""
    for key in request:
        if key in _UNSUPPORTED:
            raise MappingError(key, "has no equivalent in the worker's native input (use mode 'openai')")
        if key not in _HANDLED | _IGNORED | _SAMPLING | _VLLM_EXTRAS:
            raise MappingError(key, "is not an OpenAI chat-completions field this mapping knows")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MappingError("messages", "must be a non-empty list")
    native_messages = [_message(i, m) for i, m in enumerate(messages)]
    sampling: dict[str, Any] = {k: request[k] for k in request if k in _SAMPLING | _VLLM_EXTRAS}
    max_tokens = request.get("max_completion_tokens", request.get("max_tokens", default_max_tokens))
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise MappingError("max_completion_tokens", "must be a positive integer")
        # Always sent when known: the legacy worker otherwise stops at 100 tokens.
        sampling["max_tokens"] = max_tokens
    native: dict[str, Any] = {"messages": native_messages, "sampling_params": sampling}
    if request.get("stream"):
        native["stream"] = True
    return native


def _message(index: int, message: Any) -> dict[str, Any]:
    path = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise MappingError(path, "must be an object with 'role' and 'content'")
    role = message.get("role")
    if role not in _ROLES:
        raise MappingError(f"{path}.role", f"must be one of {sorted(_ROLES)}, got {role!r}")
    if message.get("tool_calls"):
        raise MappingError(f"{path}.tool_calls", "tool calls need mode 'openai'")
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise MappingError(f"{path}.content[{j}]", "only text parts map to the native input")
            texts.append(part["text"])
        content = "\n".join(texts)
    elif not isinstance(content, str):
        raise MappingError(f"{path}.content", "must be a string or a list of text parts")
    # The chat template sees roles verbatim; many templates know no 'developer'.
    return {"role": "system" if role == "developer" else role, "content": content}


# ----------------------------------------------------------------------------- output


def output_to_completion(
    output: Any, *, completion_id: str, model: str, created: int, max_tokens: int | None = None
) -> dict[str, Any] | None:
    """Any worker output form (§7) → one ``chat.completion`` dict, or None if unrecognised.

    Raises :class:`MappingError` (path ``error``) when the output carries an ``error``.
    """
    items = output if isinstance(output, list) else [output]
    if not items:
        return None
    for item in items:
        if isinstance(item, Mapping) and "error" in item:
            raise MappingError("error", str(item["error"]))
    if all(isinstance(i, Mapping) and i.get("object") == "chat.completion" for i in items):
        return dict(items[-1])
    if all(isinstance(i, str) for i in items):
        chunks, _rest, _done = parse_sse("".join(items))
        return aggregate_chunks(chunks, completion_id=completion_id, model=model, created=created)
    if all(isinstance(i, list) for i in items):
        flat = [c for batch in items for c in batch]
        return aggregate_chunks(flat, completion_id=completion_id, model=model, created=created)
    if all(_is_native_batch(i) for i in items):
        texts: dict[int, list[str]] = {}
        for batch in items:
            for index, choice in enumerate(batch["choices"]):
                texts.setdefault(index, []).extend(t for t in choice.get("tokens") or [] if isinstance(t, str))
        usage = _usage(items[-1].get("usage"))
        finish = _finish_reason(len(texts), usage, max_tokens)
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": "".join(texts[i])},
                 "finish_reason": finish, "logprobs": None}
                for i in sorted(texts)
            ],
            "usage": usage,
        }
    return None


def native_chunk_to_openai(
    chunk: Any, *, completion_id: str, model: str, created: int, first: bool
) -> dict[str, Any] | None:
    """One native streamed batch → one ``chat.completion.chunk`` (None if not native).

    ``first`` adds ``"role": "assistant"`` to each choice's delta, as OpenAI's first chunk does.
    Choices with no new text are left out (a chunk may then have no choices).
    """
    if not _is_native_batch(chunk):
        return None
    choices = []
    for index, choice in enumerate(chunk["choices"]):
        text = "".join(t for t in choice.get("tokens") or [] if isinstance(t, str))
        if text or first:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            choices.append({"index": index, "delta": delta, "finish_reason": None, "logprobs": None})
    return {
        "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": choices, "usage": None,
    }


def stream_tail(completion: Mapping[str, Any], *, include_usage: bool = False) -> list[dict[str, Any]]:
    """The chunks that end an OpenAI stream, from the final completion: one ``finish_reason``
    chunk per choice and, with ``include_usage``, the usage chunk. Follow with :data:`SSE_DONE`."""
    base = {"id": completion.get("id"), "object": "chat.completion.chunk",
            "created": completion.get("created"), "model": completion.get("model")}
    tail = [
        {**base, "choices": [{"index": c.get("index", i), "delta": {}, "finish_reason": c.get("finish_reason"),
                              "logprobs": None}], "usage": None}
        for i, c in enumerate(completion.get("choices") or [])
    ]
    if include_usage:
        tail.append({**base, "choices": [], "usage": completion.get("usage")})
    return tail


def to_sse(chunk: Any) -> str:
    """One server-sent event line for ``chunk`` (``data: {...}\\n\\n``)."""
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"


def parse_sse(text: str) -> tuple[list[Any], str, bool]:
    """Complete ``data:`` events in ``text`` → (parsed chunks, unparsed remainder, saw [DONE]).

    The proxy worker splits events arbitrarily across yields, so callers keep the remainder
    and prepend it to the next piece.
    """
    chunks: list[Any] = []
    done = False
    text = text.replace("\r\n", "\n")
    *events, rest = text.split("\n\n")
    for event in events:
        data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
        if not data:
            continue
        if data == "[DONE]":
            done = True
            continue
        try:
            chunks.append(json.loads(data))
        except ValueError:
            continue  # a corrupted event cannot be repaired; the final output still has it all
    return chunks, rest, done


def aggregate_chunks(chunks: list[Any], *, completion_id: str, model: str, created: int) -> dict[str, Any] | None:
    """``chat.completion.chunk`` dicts → the equivalent ``chat.completion``."""
    if not chunks:
        return None
    for chunk in chunks:
        if isinstance(chunk, Mapping) and "error" in chunk:
            raise MappingError("error", str(chunk["error"]))
    texts: dict[int, list[str]] = {}
    finish: dict[int, Any] = {}
    usage = None
    first = next((c for c in chunks if isinstance(c, Mapping)), {})
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            content = (choice.get("delta") or {}).get("content")
            texts.setdefault(index, [])
            if isinstance(content, str):
                texts[index].append(content)
            if choice.get("finish_reason"):
                finish[index] = choice["finish_reason"]
    return {
        "id": first.get("id", completion_id), "object": "chat.completion",
        "created": first.get("created", created), "model": first.get("model", model),
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": "".join(texts[i])},
             "finish_reason": finish.get(i, "stop"), "logprobs": None}
            for i in sorted(texts)
        ],
        "usage": usage,
    }


def _is_native_batch(value: Any) -> bool:
    if not isinstance(value, Mapping):
        return False
    choices = value.get("choices")
    return isinstance(choices, list) and all(isinstance(c, Mapping) and "tokens" in c for c in choices)


def _usage(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, Mapping):
        return None
    prompt, completion = int(raw.get("input") or 0), int(raw.get("output") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(n: int, usage: Mapping[str, int] | None, max_tokens: int | None) -> str:
    # The native output has no finish_reason; "length" is only detectable for n == 1.
    if n == 1 and usage and max_tokens and usage["completion_tokens"] >= max_tokens:
        return "length"
    return "stop"
