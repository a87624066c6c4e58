"""A job longer than RabbitMQ's ``consumer_timeout``: the server (timeout 60 s, checked every
second here) closes the channel of any consumer holding an unacked delivery longer than
that, which for Celery means a reconnect and a redelivery. A 90 s bridge job must still end
as one remote job and one correct result: the worker survives the closed channel
(``broker_channel_error_retry``, set by ``bridge.install`` on AMQP brokers), and the
redelivered message re-attaches to the job it already holds. A control consumer that holds
a plain message unacked shows the server really enforces the 60 s."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import pytest
from amqp.exceptions import PreconditionFailed
from celery_helpers import Stack, WorkerProcess, wait_until
from kombu import Connection, Exchange, Queue
from rabbit_server import RabbitMQServer

CONTROL_TAG = "bridge-control-holder"
TIMED_OUT = re.compile(r"Consumer (\S+) on channel \d+ has timed out waiting for delivery acknowledgement")


class UnackedHolder(threading.Thread):
    """Consumes one message of its own queue and never acks it; records when RabbitMQ
    closed its channel for that (PRECONDITION_FAILED)."""

    def __init__(self, url: str, deadline_s: float) -> None:
        super().__init__(name="unacked-holder", daemon=True)
        self.url, self.deadline_s = url, deadline_s
        self.received = threading.Event()
        self.closed_after: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        queue = Queue("bridge-control-held", Exchange("bridge-control", type="direct"), "held",
                      durable=False, auto_delete=True)
        try:
            with Connection(self.url) as conn:
                channel = conn.channel()
                queue(channel).declare()
                conn.Producer(channel).publish({"hold": True}, exchange=queue.exchange, routing_key="held",
                                               serializer="json")
                received_at: list[float] = []

                def on_message(message: object) -> None:
                    received_at.append(time.monotonic())
                    self.received.set()  # and never ack

                channel.basic_consume(queue.name, consumer_tag=CONTROL_TAG, callback=on_message, no_ack=False)
                end = time.monotonic() + self.deadline_s
                while time.monotonic() < end:
                    try:
                        conn.drain_events(timeout=1)
                    except TimeoutError:
                        continue
                    except PreconditionFailed:
                        self.closed_after = time.monotonic() - received_at[0]
                        return
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_90s_job_survives_a_60s_consumer_timeout_with_one_remote_job(
    rabbit_stack: Stack, rabbit_workers: Callable[..., WorkerProcess], rabbitmq: RabbitMQServer
) -> None:
    assert "{ok,60000}" in rabbitmq.ctl("eval", "application:get_env(rabbit, consumer_timeout).")
    ep, app = rabbit_stack.endpoint, rabbit_stack.app
    worker = rabbit_workers(pool="threads", concurrency=4)
    holder = UnackedHolder(rabbitmq.url, deadline_s=150)
    holder.start()
    assert holder.received.wait(30), holder.error
    before = ep.submissions("sleep")
    result = app.send_task("bridge.run", args=({"seconds": 90}, "sleep"))
    # the worker dying (Celery treats a channel closed by the server as unrecoverable) fails at once
    wait_until(lambda: result.ready() or worker.proc.poll() is not None, 200, 0.5)
    assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()}"
    assert result.get(timeout=5) == {"slept": 90.0}
    holder.join(60)
    # the server enforced its 60 s on the control consumer ...
    assert holder.error is None, holder.error
    assert holder.closed_after is not None and 60 <= holder.closed_after < 75
    # ... and on the worker's held delivery too: the worker reconnected and re-attached
    timed_out = TIMED_OUT.findall(rabbitmq.log())
    # (RabbitMQ 3.10 names the channel's consumer number here, not the tag: count them)
    assert len(timed_out) >= 2, (timed_out, worker.output())
    assert "redelivered while held" in worker.output()
    assert ep.submissions("sleep") - before == 1
    assert rabbit_stack.journal(result.id)["state"] == "COMPLETED"
