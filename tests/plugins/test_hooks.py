"""One test per hook in bridge.hookspecs (``test_hook_<name>``, checked by test_meta.py),
then the pipeline rules: order, None = unchanged, errors naming the plugin, sync/async."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import click
import pytest

from bridge import JobRejected, hookimpl
from bridge.errors import BridgeError, ConfigurationError, MalformedResponse
from bridge.hooks import EVENTS, Hooks, JobContext
from bridge.hookspecs import first_answer, observer, registration, transform
from bridge.plugins import PluginManager


def ctx(**fields: Any) -> JobContext:
    return JobContext("ep", **fields)


# ----------------------------------------------------------------------- one per hook


def test_hook_bridge_transform_input(make_hooks):
    class AddOne:
        @hookimpl
        def bridge_transform_input(self, ctx, input):
            return {**input, "n": input["n"] + 1, "seen_by": ctx.endpoint_id}

    hooks = make_hooks(add=AddOne())
    assert hooks.transform_input(ctx(), {"n": 1}) == {"n": 2, "seen_by": "ep"}


def test_hook_bridge_lookup(make_hooks):
    class Hit:
        @hookimpl
        def bridge_lookup(self, ctx, input):
            if input == "known":
                ctx.meta["cache"] = "hit"
                return {"answer": 42}
            return None

    hooks = make_hooks(hit=Hit())
    c = ctx()
    assert hooks.lookup(c, "known") == (True, {"answer": 42})
    assert c.meta == {"cache": "hit"}
    assert hooks.lookup(ctx(), "unknown") == (False, None)


def test_hook_bridge_transform_output(make_hooks):
    class Upper:
        @hookimpl
        def bridge_transform_output(self, output):
            return output.upper()

    assert make_hooks(u=Upper()).transform_output(ctx(), "done") == "DONE"


def test_hook_bridge_transform_chunk(make_hooks):
    class Number:
        @hookimpl
        def bridge_transform_chunk(self, ctx, chunk):
            ctx.state["i"] = ctx.state.get("i", 0) + 1
            return f"{ctx.state['i']}:{chunk}"

    hooks = make_hooks(n=Number())
    c = ctx()
    assert [hooks.transform_chunk(c, x) for x in "ab"] == ["1:a", "2:b"]


def test_hook_bridge_redact(make_hooks):
    class Mask:
        @hookimpl
        def bridge_redact(self, value):
            return {k: "***" if k == "password" else v for k, v in value.items()}

    original = {"user": "u", "password": "p"}
    assert make_hooks(m=Mask()).redact(ctx(), original) == {"user": "u", "password": "***"}
    assert original["password"] == "p"


class Recorder:
    """Observes every event, recording (event, kwargs)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def bridge_on_submitted(self, ctx, input):
        self.seen.append(("submitted", {"job_id": ctx.job_id, "input": input}))

    @hookimpl
    def bridge_on_status_changed(self, ctx, status, previous):
        self.seen.append(("status_changed", {"status": status, "previous": previous}))

    @hookimpl
    def bridge_on_completed(self, ctx, output, delay_ms, execution_ms):
        self.seen.append(("completed", {"output": output, "delay_ms": delay_ms, "execution_ms": execution_ms}))

    @hookimpl
    def bridge_on_failed(self, ctx, error, delay_ms, execution_ms):
        self.seen.append(("failed", {"error": error, "delay_ms": delay_ms}))

    @hookimpl
    def bridge_on_cancelled(self, ctx, reason):
        self.seen.append(("cancelled", {"reason": reason}))

    @hookimpl
    def bridge_on_retried(self, ctx, error, delay):
        self.seen.append(("retried", {"attempt": ctx.attempt, "delay": delay}))

    @hookimpl
    def bridge_on_rate_limited(self, ctx, route, retry_after):
        self.seen.append(("rate_limited", {"route": route, "retry_after": retry_after}))


def test_hook_bridge_on_submitted(make_hooks):
    rec = Recorder()
    make_hooks(r=rec).notify("submitted", ctx(job_id="j1"), input={"x": 1})
    assert rec.seen == [("submitted", {"job_id": "j1", "input": {"x": 1}})]


def test_hook_bridge_on_status_changed(make_hooks):
    rec = Recorder()
    make_hooks(r=rec).notify("status_changed", ctx(), status="IN_PROGRESS", previous="IN_QUEUE")
    assert rec.seen == [("status_changed", {"status": "IN_PROGRESS", "previous": "IN_QUEUE"})]


def test_hook_bridge_on_completed(make_hooks):
    rec = Recorder()
    # delay_ms/execution_ms left out by the caller arrive as None
    make_hooks(r=rec).notify("completed", ctx(), output=[1])
    assert rec.seen == [("completed", {"output": [1], "delay_ms": None, "execution_ms": None})]


def test_hook_bridge_on_failed(make_hooks):
    rec = Recorder()
    err = BridgeError("boom")
    make_hooks(r=rec).notify("failed", ctx(), error=err, delay_ms=5)
    assert rec.seen == [("failed", {"error": err, "delay_ms": 5})]


def test_hook_bridge_on_cancelled(make_hooks):
    rec = Recorder()
    make_hooks(r=rec).notify("cancelled", ctx(), reason="revoked")
    assert rec.seen == [("cancelled", {"reason": "revoked"})]


def test_hook_bridge_on_retried(make_hooks):
    rec = Recorder()
    make_hooks(r=rec).notify("retried", ctx(attempt=2), error=BridgeError("x"), delay=1.5)
    assert rec.seen == [("retried", {"attempt": 2, "delay": 1.5})]


def test_hook_bridge_on_rate_limited(make_hooks):
    rec = Recorder()
    make_hooks(r=rec).notify("rate_limited", ctx(), route="run", retry_after=3.0)
    assert rec.seen == [("rate_limited", {"route": "run", "retry_after": 3.0})]


def test_hook_bridge_register_endpoints(make_hooks):
    class Eps:
        @hookimpl
        def bridge_register_endpoints(self, register, options):
            register("llama", options["eps"]["id"], base_url="http://127.0.0.1:1/v2",
                     api_key_env="LLAMA_KEY", policy={"ttl": 60000})

    spec = make_hooks({"eps": {"id": "abc123"}}, eps=Eps()).endpoints()["llama"]
    assert (spec.endpoint_id, spec.base_url, spec.api_key_env, spec.policy, spec.plugin) == (
        "abc123", "http://127.0.0.1:1/v2", "LLAMA_KEY", {"ttl": 60000}, "eps")


def test_hook_bridge_register_endpoints_duplicate_names_both(make_hooks):
    class A:
        @hookimpl
        def bridge_register_endpoints(self, register):
            register("same", "a")

    class B:
        @hookimpl
        def bridge_register_endpoints(self, register):
            register("same", "b")

    with pytest.raises(ConfigurationError, match="'same'.*'a'.*'b'|'same'.*'b'.*'a'"):
        make_hooks(a=A(), b=B()).endpoints()


def test_hook_bridge_register_commands(make_hooks):
    class Cmd:
        @hookimpl
        def bridge_register_commands(self, cli):
            @cli.command("hello")
            def hello() -> None:
                click.echo("hi from a plugin")

    group = click.Group("g")
    make_hooks(c=Cmd()).register_commands(group)
    from click.testing import CliRunner

    assert CliRunner().invoke(group, ["hello"]).output == "hi from a plugin\n"


def test_hook_bridge_celery_config(make_hooks):
    class A:
        @hookimpl
        def bridge_celery_config(self):
            return {"task_acks_late": True}

    class B:
        @hookimpl
        def bridge_celery_config(self, options):
            return {"worker_prefetch_multiplier": options["b"]["prefetch"], "task_acks_late": True}

    hooks = make_hooks({"b": {"prefetch": 1}}, a=A(), b=B())
    assert hooks.celery_config() == {"task_acks_late": True, "worker_prefetch_multiplier": 1}

    class C:
        @hookimpl
        def bridge_celery_config(self):
            return {"task_acks_late": False}

    with pytest.raises(ConfigurationError, match="task_acks_late"):
        make_hooks(a=A(), c=C()).celery_config()


# ------------------------------------------------------------------- pipeline rules


def _step(tag: str, **marker: bool) -> Any:
    class Step:
        @hookimpl(**marker)
        def bridge_transform_input(self, input):
            return [*input, tag]

    return Step()


def test_pipeline_order_is_tryfirst_then_last_registered_first_then_trylast(make_hooks):
    hooks = make_hooks(a=_step("a"), late=_step("late", trylast=True), b=_step("b"),
                       early=_step("early", tryfirst=True))
    assert hooks.transform_input(ctx(), []) == ["early", "b", "a", "late"]
    assert hooks.implementations("bridge_transform_input") == ["early", "b", "a", "late"]


def test_none_means_unchanged_and_in_place_mutation_is_kept(make_hooks):
    class Mutate:
        @hookimpl
        def bridge_transform_input(self, input):
            input["touched"] = True  # returns None

    assert make_hooks(m=Mutate(), s=_step_dict()).transform_input(ctx(), {}) == {"touched": True, "s": 1}


def _step_dict() -> Any:
    class S:
        @hookimpl
        def bridge_transform_input(self, input):
            return {**input, "s": 1}

    return S()


def test_a_veto_names_the_plugin_and_stops_the_pipeline(make_hooks):
    calls = []

    class Veto:
        @hookimpl(tryfirst=True)
        def bridge_transform_input(self, input):
            raise JobRejected("prompt too long")

    class After:
        @hookimpl
        def bridge_transform_input(self, input):
            calls.append(input)

    with pytest.raises(JobRejected) as info:
        make_hooks(veto=Veto(), after=After()).transform_input(ctx(task_id="t"), "x" * 10)
    assert "plugin 'veto': prompt too long" in str(info.value)
    assert info.value.endpoint_id == "ep"
    assert calls == []


def test_a_crashing_input_transform_rejects_the_job_naming_the_plugin(make_hooks):
    class Buggy:
        @hookimpl
        def bridge_transform_input(self, input):
            return input["missing"]

    with pytest.raises(JobRejected, match="plugin 'buggy' failed in bridge_transform_input: KeyError"):
        make_hooks(buggy=Buggy()).transform_input(ctx(), {})


def test_output_errors_keep_their_bridge_type_and_name_the_plugin(make_hooks):
    class Strict:
        @hookimpl
        def bridge_transform_output(self, output):
            raise MalformedResponse("bad output")

    class Buggy:
        @hookimpl
        def bridge_transform_chunk(self, chunk):
            return 1 / 0

    with pytest.raises(MalformedResponse, match="plugin 'strict': bad output"):
        make_hooks(strict=Strict()).transform_output(ctx(), 1)
    with pytest.raises(BridgeError, match="plugin 'buggy' failed in bridge_transform_chunk: ZeroDivisionError"):
        make_hooks(buggy=Buggy()).transform_chunk(ctx(), 1)


def test_lookup_first_answer_wins(make_hooks):
    asked = []

    class Miss:
        @hookimpl(tryfirst=True)
        def bridge_lookup(self, input):
            asked.append("miss")

    class A:
        @hookimpl
        def bridge_lookup(self, input):
            asked.append("a")
            return "from-a"

    class B:
        @hookimpl(trylast=True)
        def bridge_lookup(self, input):
            asked.append("b")
            return "from-b"

    assert make_hooks(miss=Miss(), a=A(), b=B()).lookup(ctx(), 1) == (True, "from-a")
    assert asked == ["miss", "a"]


def test_observer_errors_are_logged_with_the_plugin_name_and_others_still_run(make_hooks, caplog):
    rec = Recorder()

    class Broken:
        @hookimpl(tryfirst=True)
        def bridge_on_cancelled(self, ctx):
            raise RuntimeError("observer bug")

    hooks = make_hooks(rec=rec, broken=Broken())
    with caplog.at_level(logging.WARNING, logger="bridge.hooks"):
        hooks.notify("cancelled", ctx(), reason="user")  # does not raise
    assert rec.seen == [("cancelled", {"reason": "user"})]
    assert "'broken'" in caplog.text and "bridge_on_cancelled" in caplog.text


def test_unknown_event_is_a_caller_bug(make_hooks):
    with pytest.raises(ValueError, match="unknown hook event 'complete'"):
        make_hooks().notify("complete", ctx())
    assert set(EVENTS) == {"submitted", "status_changed", "completed", "failed", "cancelled",
                           "retried", "rate_limited"}


def test_impls_may_take_any_subset_of_arguments_in_any_order(make_hooks):
    class Subsets:
        @hookimpl
        def bridge_transform_output(self, output, ctx):
            return f"{ctx.endpoint_id}/{output}"

        @hookimpl
        def bridge_transform_chunk(self):
            return "constant"

    hooks = make_hooks(s=Subsets())
    assert hooks.transform_output(ctx(), "o") == "ep/o"
    assert hooks.transform_chunk(ctx(), "c") == "constant"


def test_wrappers_are_refused_with_the_plugin_name(make_hooks):
    class Wrap:
        @hookimpl(wrapper=True)
        def bridge_transform_input(self, input):
            return (yield)

    with pytest.raises(ConfigurationError, match="'wrap'.*wrapper"):
        make_hooks(wrap=Wrap())


def test_options_reach_plugins_through_the_context(make_hooks):
    seen = []

    class Opt:
        @hookimpl
        def bridge_transform_input(self, ctx, input):
            seen.append(ctx.options_for("opt"))

    hooks = make_hooks({"opt": {"level": 3}}, opt=Opt())
    hooks.transform_input(JobContext("ep"), 1)  # made directly: options filled in
    hooks.transform_input(hooks.context("ep"), 1)
    assert seen == [{"level": 3}, {"level": 3}]


# ------------------------------------------------------------------------ sync/async


class AsyncPlugin:
    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    async def bridge_transform_input(self, input):
        await asyncio.sleep(0)
        return input + ["async"]

    @hookimpl
    async def bridge_lookup(self, input):
        return "hit" if "hit" in input else None

    @hookimpl
    async def bridge_on_completed(self, output):
        self.events.append(f"completed:{output}")


def test_sync_callers_run_async_impls_to_completion(make_hooks):
    plugin = AsyncPlugin()
    hooks = make_hooks(sync=_step("sync"), aio=plugin)
    assert hooks.transform_input(ctx(), []) == ["async", "sync"]
    assert hooks.lookup(ctx(), ["hit"]) == (True, "hit")
    hooks.notify("completed", ctx(), output="o")
    assert plugin.events == ["completed:o"]


def test_sync_callers_work_from_several_threads(make_hooks):
    hooks = make_hooks(aio=AsyncPlugin())
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(hooks.transform_input(ctx(), [])))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == [["async"]] * 4


async def test_async_twins_await_async_impls_and_call_sync_ones(make_hooks):
    plugin = AsyncPlugin()

    class Sync:
        @hookimpl
        def bridge_transform_output(self, output):
            return output * 2

        @hookimpl
        def bridge_transform_chunk(self, chunk):
            return -chunk

        @hookimpl
        def bridge_redact(self, value):
            return "redacted"

    hooks = make_hooks(sync=Sync(), aio=plugin)
    assert await hooks.atransform_input(ctx(), []) == ["async"]
    assert await hooks.alookup(ctx(), ["hit"]) == (True, "hit")
    assert await hooks.alookup(ctx(), []) == (False, None)
    assert await hooks.atransform_output(ctx(), 2) == 4
    assert await hooks.atransform_chunk(ctx(), 3) == -3
    assert await hooks.aredact(ctx(), "secret") == "redacted"
    await hooks.anotify("completed", ctx(), output="o")
    assert plugin.events == ["completed:o"]


async def test_a_sync_call_inside_a_running_loop_refuses_async_impls_clearly(make_hooks):
    hooks = make_hooks(aio=AsyncPlugin())
    with pytest.raises(ConfigurationError, match="'aio'.*async hook.*running event loop"):
        hooks.transform_input(ctx(), [])


async def test_anotify_swallows_async_observer_errors(make_hooks, caplog):
    class Broken:
        @hookimpl
        async def bridge_on_failed(self, error):
            raise RuntimeError("async observer bug")

    with caplog.at_level(logging.WARNING, logger="bridge.hooks"):
        await make_hooks(broken=Broken()).anotify("failed", ctx(), error=BridgeError("x"))
    assert "'broken'" in caplog.text


# ----------------------------------------------------------------------- empty / cache


def test_empty_hooks_return_their_argument_itself():
    hooks = Hooks.empty()
    value = {"x": [1]}
    c = ctx()
    assert hooks.transform_input(c, value) is value
    assert hooks.transform_output(c, value) is value
    assert hooks.transform_chunk(c, value) is value
    assert hooks.redact(c, value) is value
    assert hooks.lookup(c, value) == (False, None)
    hooks.notify("completed", c, output=value)
    assert not hooks.enabled and hooks.endpoints() == {} and hooks.celery_config() == {}


def test_redact_fails_closed(make_hooks, caplog):
    class Broken:
        @hookimpl
        def bridge_redact(self, value):
            raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR, logger="bridge.hooks"):
        assert make_hooks(b=Broken()).redact(ctx(), {"password": "x"}) == "***"
    assert "'b'" in caplog.text


def test_from_settings_is_cached_per_settings(monkeypatch):
    first = Hooks.from_settings()
    assert Hooks.from_settings() is first
    assert not first.enabled  # first-party plugins are inert until configured
    monkeypatch.setenv("BRIDGE_PLUGIN_REDACT_FIELDS", "ssn")
    second = Hooks.from_settings()
    assert second is not first and second.active("redact")
    assert Hooks.from_settings(refresh=True) is not second


# ------------------------------------------------------------- a hook added by one spec


def _extra_specs() -> type:
    """Specs for hooks bridge does not have, marked like those in bridge.hookspecs."""

    class ExtraSpecs:
        @transform(failure=JobRejected)
        def bridge_transform_prompt(ctx, prompt):  # noqa: N805 - a spec, not a method
            """Reshape a prompt."""

        @first_answer
        def bridge_answer_early(ctx, prompt):  # noqa: N805
            """Answer without asking the endpoint."""

        @observer
        def bridge_on_scored(ctx, score, label):  # noqa: N805
            """A score was computed."""

        @registration
        def bridge_register_tools(add, options):  # noqa: N805
            """Contribute tools."""

    return ExtraSpecs


def _hooks_with_extra_specs(*plugins: Any) -> Hooks:
    pm = PluginManager()
    pm.add_hookspecs(_extra_specs())  # the only step: no table in bridge.hooks is edited
    for i, plugin in enumerate(plugins):
        pm.register(plugin, name=f"p{i}")
    return Hooks(pm)


def test_a_new_hook_is_one_spec_and_its_call_site():
    scores: list[Any] = []

    class Prompt:
        @hookimpl
        def bridge_transform_prompt(self, prompt):
            return prompt + "!"

        @hookimpl
        async def bridge_answer_early(self, ctx, prompt):
            return "cached" if prompt == "known!" else None

        @hookimpl
        def bridge_on_scored(self, label, score):  # any subset, any order
            scores.append((label, score))

        @hookimpl
        def bridge_register_tools(self, add):
            add("grep")

    class Broken:
        @hookimpl(tryfirst=True)
        def bridge_on_scored(self):
            raise RuntimeError("observer bug")

    hooks = _hooks_with_extra_specs(Prompt(), Broken())
    assert hooks.pipeline("bridge_transform_prompt", ctx(), "hi") == "hi!"
    assert hooks.first_answer("bridge_answer_early", ctx(), "known!") == (True, "cached")
    assert hooks.first_answer("bridge_answer_early", ctx(), "new") == (False, None)
    hooks.notify("scored", ctx(), score=0.5, label="good")  # Broken's error is swallowed
    assert scores == [("good", 0.5)]
    tools: list[str] = []
    assert hooks.call_registration("bridge_register_tools", add=tools.append) == [("p0", None)]
    assert tools == ["grep"]
    assert hooks.active("transform_prompt") and hooks.implementations("bridge_on_scored") == ["p1", "p0"]
    # bridge's own hooks are untouched by the extra specs
    assert hooks.transform_input(ctx(), 1) == 1 and set(EVENTS) < set(hooks._events)


async def test_a_new_hook_runs_from_async_code_and_its_failure_class_names_the_plugin():
    class Prompt:
        @hookimpl
        async def bridge_transform_prompt(self, prompt):
            return prompt.upper()

        @hookimpl
        async def bridge_on_scored(self, ctx, score):
            ctx.state["score"] = score

    class Veto:
        @hookimpl(trylast=True)
        def bridge_transform_prompt(self, prompt):
            raise KeyError(prompt)

    assert await _hooks_with_extra_specs(Prompt()).apipeline("bridge_transform_prompt", ctx(), "a") == "A"
    c = ctx()
    await _hooks_with_extra_specs(Prompt()).anotify("scored", c, score=3)
    assert c.state == {"score": 3}
    with pytest.raises(JobRejected, match="plugin 'p1' failed in bridge_transform_prompt: KeyError"):
        await _hooks_with_extra_specs(Prompt(), Veto()).apipeline("bridge_transform_prompt", ctx(), "a")


def test_calling_a_hook_as_the_wrong_kind_is_a_caller_bug(make_hooks):
    hooks = make_hooks()
    with pytest.raises(ValueError, match="'bridge_on_completed' is not a transform hook"):
        hooks.pipeline("bridge_on_completed", ctx(), 1)
    with pytest.raises(ValueError, match="'bridge_transform_prompt' is not a transform hook"):
        hooks.pipeline("bridge_transform_prompt", ctx(), 1)  # not a spec of this manager
    with pytest.raises(ValueError, match="unknown hook event 'scored'"):
        hooks.notify("scored", ctx())


def test_a_spec_that_breaks_the_calling_convention_is_refused():
    class Bad:
        @transform
        def bridge_transform_pair(ctx, left, right):  # noqa: N805 - a pipeline passes one value
            """Two values."""

    pm = PluginManager()
    pm.add_hookspecs(Bad)
    with pytest.raises(TypeError, match="bridge_transform_pair must take \\(ctx, <value>\\)"):
        Hooks(pm)
