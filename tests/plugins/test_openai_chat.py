"""openai_chat: OpenAI chat request → worker-vllm input, worker output/chunks → OpenAI shapes
(examples from /work/shared/reference/vllm-openai.md §3, §5, §6)."""

from __future__ import annotations

import json
import re

import pytest
from bridge_plugins.openai_chat import SSE_DONE, stream_tail, to_sse

from bridge.errors import JobFailed, JobRejected
from bridge.hooks import Hooks, JobContext
from bridge.plugins import make_plugin_manager

REQUEST = {
    "model": "meta-llama/Llama-3.1-8B-Instruct", "stream": True, "stream_options": {"include_usage": True},
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}],
    "max_completion_tokens": 64, "temperature": 0.2, "stop": ["\n\n"],
}


def hooks_for(**env: str) -> Hooks:
    environ = {f"BRIDGE_PLUGIN_OPENAI_CHAT_{k.upper()}": v for k, v in env.items()}
    return Hooks(make_plugin_manager(environ=environ, entry_points=False))


@pytest.fixture
def native() -> Hooks:
    return hooks_for(endpoints="llama")


def test_request_maps_to_the_native_input(native):
    ctx = JobContext("llama", job_id="job-1")
    assert native.transform_input(ctx, REQUEST) == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        "sampling_params": {"max_tokens": 64, "temperature": 0.2, "stop": ["\n\n"]},
        "stream": True,
    }
    assert ctx.meta["openai_chat"]["model"] == REQUEST["model"]
    assert ctx.meta["openai_chat"]["include_usage"] is True


def test_developer_role_vllm_extras_and_default_max_tokens():
    hooks = hooks_for(default_max_tokens="200")
    out = hooks.transform_input(JobContext("any"), {
        "model": "m", "messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}],
        "top_k": 5, "user": "ignored",
    })
    assert out == {"messages": [{"role": "system", "content": "d"}, {"role": "user", "content": "u"}],
                   "sampling_params": {"top_k": 5, "max_tokens": 200}}


@pytest.mark.parametrize("request_body, path", [
    ({"messages": [{"role": "user", "content": "x"}], "tools": []}, "at tools:"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "at messages[0].role:"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "at messages[0].content[0]:"),
    ({"messages": []}, "at messages:"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "at max_completion_tokens:"),
])
def test_unmappable_requests_are_vetoed_before_submit_with_the_path(native, request_body, path):
    with pytest.raises(JobRejected, match=re.escape(path)) as info:
        native.transform_input(JobContext("llama"), request_body)
    assert "openai_chat" in str(info.value) and info.value.endpoint_id == "llama"


def test_other_inputs_and_other_endpoints_pass_through(native):
    ctx = JobContext("llama")
    plain = {"prompt": "hi", "sampling_params": {}}
    assert native.transform_input(ctx, plain) is plain
    assert "openai_chat" not in ctx.meta
    other = JobContext("other-endpoint")
    assert native.transform_input(other, REQUEST) is REQUEST
    # outputs of tasks whose input was not an OpenAI request stay native
    batch = [{"choices": [{"tokens": ["x"]}], "usage": {"input": 1, "output": 1}}]
    assert native.transform_output(ctx, batch) is batch


def test_native_output_becomes_a_chat_completion(native):
    ctx = JobContext("llama", job_id="job-9")
    native.transform_input(ctx, {**REQUEST, "max_completion_tokens": 4})
    output = [{"choices": [{"tokens": ["It"]}], "usage": {"input": 23, "output": 1}},
              {"choices": [{"tokens": [" is", " Paris", "."]}], "usage": {"input": 23, "output": 4}}]
    completion = native.transform_output(ctx, output)
    assert completion == {
        "id": "chatcmpl-job-9", "object": "chat.completion", "created": ctx.meta["openai_chat"]["created"],
        "model": REQUEST["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "It is Paris."},
                     "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 23, "completion_tokens": 4, "total_tokens": 27},
    }
    tail = stream_tail(completion, include_usage=True)
    assert tail[0]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length", "logprobs": None}
    assert tail[1]["choices"] == [] and tail[1]["usage"]["total_tokens"] == 27
    assert to_sse(tail[1]).startswith("data: {") and SSE_DONE == "data: [DONE]\n\n"


def test_streamed_native_chunks_become_completion_chunks(native):
    ctx = JobContext("llama", job_id="job-9")
    native.transform_input(ctx, REQUEST)
    first = native.transform_chunk(ctx, {"choices": [{"tokens": ["It"]}], "usage": {"input": 23, "output": 1}})
    second = native.transform_chunk(ctx, {"choices": [{"tokens": [" is", " Paris", "."]}], "usage": {}})
    assert first["object"] == "chat.completion.chunk" and first["id"] == "chatcmpl-job-9"
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "It"},
                                 "finish_reason": None, "logprobs": None}]
    assert second["choices"][0]["delta"] == {"content": " is Paris."} and second["usage"] is None
    assert second["created"] == first["created"] and second["model"] == REQUEST["model"]


def test_openai_mode_wraps_the_body_and_reads_openai_outputs():
    hooks = hooks_for(mode="openai")
    ctx = JobContext("ep", job_id="j")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}
    assert hooks.transform_input(ctx, body) == {"openai_route": "/v1/chat/completions", "openai_input": body}
    completion = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}]}
    assert hooks.transform_output(ctx, [completion]) == completion


def test_openai_mode_sse_split_anywhere_is_reassembled():
    hooks = hooks_for(mode="openai")
    ctx = JobContext("ep", job_id="j")
    hooks.transform_input(ctx, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    events = [
        {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "Paris"}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    text = "".join(to_sse(e) for e in events) + SSE_DONE
    pieces = [text[:30], text[30:200], text[200:]]  # arbitrary boundaries, as the proxy worker yields
    got = [c for piece in pieces for c in hooks.transform_chunk(ctx, piece)]
    assert got == events
    completion = hooks.transform_output(ctx, pieces)
    assert completion["choices"][0]["message"]["content"] == "Paris"
    assert completion["choices"][0]["finish_reason"] == "stop" and completion["id"] == "c1"


def test_an_error_in_the_output_fails_the_task(native):
    ctx = JobContext("llama", job_id="j")
    native.transform_input(ctx, REQUEST)
    err = {"error": {"message": "vLLM returned HTTP 400: bad", "type": "worker_error", "code": None}}
    with pytest.raises(JobFailed, match="openai_chat.*worker returned an error") as info:
        native.transform_output(ctx, [err])
    assert "HTTP 400" in json.dumps(info.value.error)
