"""The worker side of bridge: :func:`install` for any Celery app, and the pieces it adds.

- :class:`BridgeStep`, a bootstep in the worker's main process that every 0.25 s copies
  revokes of running or reserved bridge tasks into their cancel keys (a plain revoke
  neither stops a running task nor reaches prefork children), and every
  ``BRIDGE_HEARTBEAT_INTERVAL`` seconds refreshes the Redis broker's unacked-index score of
  the bridge messages it holds, so a long wait is never redelivered by the visibility
  timeout while its worker lives, and a dead worker's tasks come back VT seconds after
  its last heartbeat.
- signal handlers: ``task_revoked`` (terminate, expiry of a reserved task) sets the cancel
  key and cancels the remote job from a side thread; ``worker_shutting_down`` hands every
  waiting task back to the broker without cancelling its remote job (warm shutdown).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from celery import Celery, bootsteps, signals

from bridge import held, keys
from bridge.config import env_float
from bridge.redis_clients import RETRY_ON, sync_client

log = logging.getLogger("bridge.worker")

MIRROR_INTERVAL = 0.25
_installed_signals = False


def _bridge_requests() -> list[Any]:
    from celery.worker import state

    from bridge.tasks import JOB_TASKS

    return [r for r in (*state.active_requests, *state.reserved_requests) if r.name in JOB_TASKS]


def _waited_on(requests: list[Any]) -> list[Any]:
    """The requests someone is really running: a held request only while this process holds
    it (waiting or completing) as that delivery; a blocking-path request while it is in the
    pool. A request left behind by a failure must not have its lease renewed forever: its
    message then comes back by the visibility timeout and resumes its job."""
    jobs = held.current()
    holding = {} if jobs is None else {task_id: h.req for task_id, h in list(jobs.held.items())}
    parked = set() if jobs is None else {id(req) for req, _ in list(jobs.parked)}
    return [r for r in requests
            if not getattr(r, "bridge_held", False) or holding.get(r.id) is r or id(r) in parked]


def _transport_closed(channel: Any) -> bool:
    return getattr(getattr(channel, "connection", None), "client", None) is None


def _guard_redis_broker(broker_url: str) -> None:
    """Keep a worker on kombu's Redis transport alive across a broker connection loss.

    Celery 5.7 closes a broken connection twice (``collect()`` and then ``close()``), and
    held messages are acked after the consumer reconnected, on their old channel: both
    reach a transport already closed, raise AttributeError and the worker exits with
    "Unrecoverable error". So: a close of a channel whose transport is gone skips the
    requeue of its unacked messages (they stay in the broker's unacked set and come back by
    the visibility timeout); an ack on such a channel removes the message from the unacked
    set through a client of its own (the set is the broker's, not the channel's); a requeue
    on it is left to the visibility timeout."""
    from kombu.transport import redis as kombu_redis

    if getattr(kombu_redis.Channel.close, "_bridge_guard", False):
        return
    original_close, original_ack, original_reject = (
        kombu_redis.Channel.close, kombu_redis.QoS.ack, kombu_redis.QoS.reject)
    clients: list[redis.Redis] = []

    def close(self: Any) -> None:
        try:
            original_close(self)
        except AttributeError:
            if not _transport_closed(self):
                raise
            self.closed = True
            log.warning("bridge: the broker connection closed with unacked messages; they come "
                        "back by the visibility timeout")

    def ack(self: Any, delivery_tag: Any) -> None:
        if not _transport_closed(self.channel):
            return original_ack(self, delivery_tag)
        if not clients:
            clients.append(sync_client(broker_url, socket_timeout=5.0))
        prefix = getattr(self.channel, "global_keyprefix", "") or ""
        try:
            pipe = clients[0].pipeline(transaction=False)
            pipe.zrem(prefix + self.unacked_index_key, delivery_tag)
            pipe.hdel(prefix + self.unacked_key, delivery_tag)
            pipe.execute()
        except RETRY_ON as exc:  # the message comes back by the visibility timeout instead
            log.warning("bridge: acking a message after a reconnect failed (%s)", type(exc).__name__)
        self._delivered.pop(delivery_tag, None)
        return None

    def reject(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
        if not _transport_closed(self.channel):
            return original_reject(self, delivery_tag, requeue)
        if not requeue:
            return ack(self, delivery_tag)
        self._delivered.pop(delivery_tag, None)  # requeued by the visibility timeout
        return None

    close._bridge_guard = True  # type: ignore[attr-defined]
    kombu_redis.Channel.close = close  # type: ignore[method-assign]
    kombu_redis.QoS.ack = ack  # type: ignore[method-assign]
    kombu_redis.QoS.reject = reject  # type: ignore[method-assign]


def _redis_url(app: Celery) -> str:
    from bridge.gateway.settings import GatewaySettings

    return GatewaySettings().redis_url


class BridgeStep(bootsteps.StartStopStep):
    """Mirror revokes into cancel keys; heartbeat the broker leases of bridge messages."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.app = worker.app
        self.mirrored: set[str] = set()
        self._seen_revoked = -1
        self._full_scan_at = 0.0
        self.trefs: list[Any] = []
        self.client: redis.Redis | None = None
        self.broker: redis.Redis | None = None
        self.unacked_index = ""

    def start(self, worker: Any) -> None:
        # These run on the consumer's timer: short retries only (no riding a long outage
        # here, it would stall the consumer); a failed round is tried again next tick.
        self.client = sync_client(_redis_url(self.app), socket_timeout=5.0)
        self.trefs.append(worker.timer.call_repeatedly(MIRROR_INTERVAL, self.mirror, priority=10))
        broker_url = str(self.app.conf.broker_url or "")
        if broker_url.startswith(("redis://", "rediss://", "unix://")):
            opts = self.app.conf.broker_transport_options or {}
            self.broker = sync_client(broker_url, socket_timeout=5.0)
            self.unacked_index = opts.get("global_keyprefix", "") + opts.get("unacked_index_key", "unacked_index")
            interval = env_float("BRIDGE_HEARTBEAT_INTERVAL", 10.0)
            self.trefs.append(worker.timer.call_repeatedly(interval, self.heartbeat, priority=10))

    def stop(self, worker: Any) -> None:
        for tref in self.trefs:
            tref.cancel()
        self.trefs.clear()

    def mirror(self) -> None:
        """Copy revokes of this worker's bridge tasks into their cancel keys."""
        from celery.worker import state

        # Scan the held requests only when the revoked set grew (and every 2 s, for a full
        # set that rotates): the main process is the consumer's, keep its timer light.
        now = time.monotonic()
        if len(state.revoked) == self._seen_revoked and now < self._full_scan_at:
            return
        self._seen_revoked, self._full_scan_at = len(state.revoked), now + 2.0
        try:
            revoked = [r.id for r in _bridge_requests() if r.id in state.revoked and r.id not in self.mirrored]
            if revoked and self.client is not None:
                pipe = self.client.pipeline(transaction=False)
                for task_id in revoked:
                    pipe.set(keys.cancel(task_id), "1", ex=7 * 86400)
                pipe.execute()
                self.mirrored.update(revoked)
            if len(self.mirrored) > 100_000:
                self.mirrored.clear()
        except RETRY_ON:  # Redis restarting: scan again on the next tick
            self._full_scan_at = 0.0
        except Exception:  # a Redis blip must not kill the worker's timer
            log.exception("bridge: mirroring revokes failed; retrying")

    def heartbeat(self) -> None:
        """Refresh the unacked-index score of every bridge message this worker holds."""
        try:
            tags = [r.message.delivery_tag for r in _waited_on(_bridge_requests()) if r.message is not None]
            if tags and self.broker is not None:
                now = time.time()
                self.broker.zadd(self.unacked_index, dict.fromkeys(tags, now), xx=True)
        except RETRY_ON as exc:  # Redis restarting: the next tick renews (leases last far longer)
            log.debug("bridge: heartbeat of held messages skipped (%s)", type(exc).__name__)
        except Exception:
            log.exception("bridge: heartbeat of held messages failed; retrying")


def _set_cancel_key(task_id: str) -> None:
    try:
        from bridge.gateway import cancel_task

        cancel_task(task_id)
    except Exception:
        log.exception("bridge: setting the cancel key of %s failed", task_id)


def _cancel_in_background(task_id: str) -> None:
    def work() -> None:
        try:
            from bridge.gateway import cancel_task
            from bridge.gateway.core import get_gateway

            cancel_task(task_id)
            get_gateway().cancel_job_of(task_id)
        except Exception:
            log.exception("bridge: cancelling the remote job of %s failed", task_id)

    threading.Thread(target=work, name=f"bridge-cancel-{task_id[:8]}", daemon=True).start()


def _on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False,
                     expired: bool = False, **_: Any) -> None:
    from bridge.tasks import JOB_TASKS

    name = getattr(sender, "name", None) or getattr(request, "task", None)
    task_id = getattr(request, "id", None)
    if name in JOB_TASKS and task_id:
        jobs = held.current()
        if jobs is not None and task_id in jobs.held:
            # Held here: this process's gateway sees the key, the job's wait sends /cancel and ends
            # the wait as REVOKED (a /cancel from aside would race it to a CANCELLED status).
            # From a side thread: through a Redis restart the write waits, the consumer must not.
            threading.Thread(target=_set_cancel_key, args=(task_id,), name=f"bridge-revoke-{task_id[:8]}",
                             daemon=True).start()
            return
        _cancel_in_background(task_id)


def _on_shutting_down(sig: str = "", how: str = "", **_: Any) -> None:
    if how != "Warm":
        return
    from bridge.gateway import core

    try:
        from bridge.gateway.settings import GatewaySettings

        client = sync_client(GatewaySettings().redis_url)
        client.set(handoff_key(os.getpid()), "1", ex=600)
        client.close()
    except Exception:
        log.exception("bridge: could not flag the handoff for prefork children")
    gateway = core.current_gateway()
    if gateway is not None:
        gateway.handoff()


def handoff_key(main_pid: int) -> str:
    """The flag a worker's main process sets on warm shutdown; its prefork children's
    gateways read it with the cancel keys (they cannot see the main process's signals)."""
    return keys.handoff(socket.gethostname(), main_pid)


def _on_child_init(**_: Any) -> None:
    from bridge.gateway.core import get_gateway

    get_gateway().set_handoff_key(handoff_key(os.getppid()))


S3_REMOVED = "<removed by bridge: s3Config must come from BRIDGE_S3_CONFIG in the worker>"


def _strip_secret_args(sender: Any = None, body: Any = None, headers: Any = None, **_: Any) -> None:
    """In the producer, before a bridge task is published: replace an ``s3Config`` in the
    input with a marker, so credentials never reach the broker, the backend or logs; the
    task then fails with InvalidRequest. (Celery swallows exceptions from this signal, so
    it cannot refuse; ``BridgeTask.apply_async`` refuses outright.)"""
    from bridge.tasks import JOB_TASKS

    if (headers or {}).get("task") not in JOB_TASKS or not isinstance(body, (list, tuple)) or not body:
        return
    args = body[0]
    first = args[0] if isinstance(args, (list, tuple)) and args else None
    if isinstance(first, dict) and "s3Config" in first:
        first["s3Config"] = S3_REMOVED
        if headers is not None and "argsrepr" in headers:
            from celery.utils.saferepr import saferepr

            headers["argsrepr"] = saferepr(args)  # computed before this signal, with the secret


def _check_settings(app: Celery) -> None:
    """Settings held jobs rely on: warn about the result store's retries (a Redis blip while
    storing fails a task whose remote job completed), and on AMQP brokers survive a
    channel closed by RabbitMQ's consumer_timeout (a held message is unacked for as long
    as its job runs) unless the app chose otherwise."""
    from bridge.redis_clients import backend_retry_missing

    missing = backend_retry_missing(app.conf)
    if missing and str(app.conf.result_backend or "").startswith(("redis://", "rediss://")):
        log.warning("bridge: this app lacks %s; a Redis restart while a task stores its result fails "
                    "the task (see docs/celery.md, Brokers)", ", ".join(missing))
    broker = str(app.conf.broker_url or "")
    if broker.startswith(("amqp://", "amqps://", "pyamqp://")) \
            and "broker_channel_error_retry" not in app.conf.changes:
        app.conf.broker_channel_error_retry = True


def install(app: Celery) -> Celery:
    """Add bridge's tasks and worker pieces to ``app``; returns ``app``. One line per app:
    ``bridge.install(app)``. Never changes the app's broker transport options."""
    global _installed_signals
    import bridge.batch.celery  # noqa: F401  (bridge.batch_item, a shared task too)
    import bridge.tasks  # noqa: F401  (shared tasks: registered on every app)

    if BridgeStep not in app.steps["worker"]:
        app.steps["worker"].add(BridgeStep)
    if str(app.conf.broker_url or "").startswith(("redis://", "rediss://", "unix://")):
        _guard_redis_broker(str(app.conf.broker_url))
    app._bridge_installed = True  # job tasks' messages are held slot-free (bridge.strategy)
    _check_settings(app)
    backend = str(app.conf.result_backend or "")
    if "BRIDGE_REDIS_URL" not in os.environ and backend.startswith(("redis://", "rediss://", "unix://")):
        os.environ["BRIDGE_REDIS_URL"] = backend
    if not _installed_signals:
        signals.task_revoked.connect(_on_task_revoked, weak=False)
        signals.worker_shutting_down.connect(_on_shutting_down, weak=False)
        signals.worker_process_init.connect(_on_child_init, weak=False)
        signals.before_task_publish.connect(_strip_secret_args, weak=False)
        _installed_signals = True
    try:
        from bridge.hooks import Hooks

        extra = Hooks.from_settings().celery_config()
        if extra:
            extra.pop("broker_transport_options", None)
            app.conf.update(extra)
    except Exception:
        log.exception("bridge: plugins' Celery settings could not be applied")
    return app
