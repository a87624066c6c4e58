"""bridge's job tasks with RabbitMQ as the broker (Redis keeps the result backend and
bridge's keys): ``celery -A bridge.app worker`` subprocesses against a private
rabbitmq-server. Jobs complete with one remote job each, also when more jobs than pool
slots are held under the consumer's QoS; chains pass outputs along; a revoke cancels the
remote job; the queue is a classic durable queue and ends empty (every message acked)."""

from __future__ import annotations

from collections.abc import Callable

from celery import chain
from celery_helpers import Stack, WorkerProcess, wait_until
from rabbit_server import RabbitMQServer


def test_more_jobs_than_pool_slots_are_held_at_once_and_complete_once_each(
    rabbit_stack: Stack, rabbit_workers: Callable[..., WorkerProcess], rabbitmq: RabbitMQServer
) -> None:
    """Job tasks hold no pool slot: on prefork -c 2 (prefetch 2), 12 jobs are all running
    remotely at once, RabbitMQ counts 12 unacked deliveries (the worker raised its QoS per
    held job), and each ends with one remote job and its result."""
    ep, app = rabbit_stack.endpoint, rabbit_stack.app
    before = ep.submissions("sleep")
    worker = rabbit_workers(pool="prefork", concurrency=2)
    results = [app.send_task("bridge.run", args=({"seconds": 15, "i": i}, "sleep")) for i in range(12)]
    jobs = [rabbit_stack.job_id(r.id, 30) for r in results]
    assert all(rabbit_stack.remote_status(j) in ("IN_QUEUE", "IN_PROGRESS") for j in jobs), worker.output()
    held = rabbitmq.queues()["celery"]
    assert (held["messages_unacknowledged"], held["consumers"]) == (12, 1)
    for r in results:
        assert r.get(timeout=60) == {"slept": 15.0}
    assert ep.submissions("sleep") - before == len(results)
    for r in results:
        assert rabbit_stack.journal(r.id)["state"] == "COMPLETED"
    # Celery's default queue on RabbitMQ: classic and durable; every delivery was acked.
    queue = wait_until(lambda: (q := rabbitmq.queues().get("celery"))
                       and q["messages"] == 0 and q["messages_unacknowledged"] == 0 and q, 15)
    assert (queue["durable"], queue["type"]) == (True, "classic")


def test_a_chain_of_bridge_tasks_passes_each_output_on(
    rabbit_stack: Stack, rabbit_workers: Callable[..., WorkerProcess]
) -> None:
    app = rabbit_stack.app
    rabbit_workers(pool="threads", concurrency=4)
    # echo returns its input; that input is the next step's input: sleep 0.5 s
    flow = chain(app.signature("bridge.run", args=({"seconds": 0.5}, "echo")),
                 app.signature("bridge.run", args=("sleep",)))
    assert flow.delay().get(timeout=60) == {"slept": 0.5}


def test_revoke_cancels_the_remote_job(
    rabbit_stack: Stack, rabbit_workers: Callable[..., WorkerProcess]
) -> None:
    rabbit_workers(pool="threads", concurrency=4)
    result = rabbit_stack.app.send_task("bridge.run", args=({"seconds": 30}, "sleep"))
    job_id = rabbit_stack.job_id(result.id, 30)
    assert rabbit_stack.remote_status(job_id) in ("IN_QUEUE", "IN_PROGRESS")
    result.revoke()
    wait_until(lambda: rabbit_stack.remote_status(job_id) == "CANCELLED", 5)
    wait_until(lambda: result.state == "REVOKED", 5)
    assert rabbit_stack.journal(result.id)["state"] == "REVOKED"
