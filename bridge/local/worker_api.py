"""The worker-facing half of the local endpoint: the routes a real ``runpod`` worker calls.

A worker started by ``runpod.serverless.start(...)`` with the ``RUNPOD_WEBHOOK_*`` variables
set (see :mod:`bridge.local.worker_procs`) talks to these routes exactly as it talks to the
RunPod platform (reference ``runpod-api.md`` §10, checked against runpod 1.12.0)::

    GET  /v2/{endpoint}/job-take/{worker}?...&job_in_progress=0|1       long poll: 200 job, 204 none
    GET  /v2/{endpoint}/job-take-batch/{worker}?...&batch_size=N       long poll: 200 [jobs], 204
    GET  /v2/{endpoint}/job-stop/{worker}?...                           long poll: {"jobsToStop": [...]}
    POST /v2/{endpoint}/job-done/{worker}/{job}?...&isStream=false|true result, or a progress update
    POST /v2/{endpoint}/job-stream/{worker}/{job}?...                   one {"output": chunk} per yield
    GET  /v2/{endpoint}/ping/{worker}?...&job_id=a,b&runpod_version=..  heartbeat

Both polls are held open (``hold`` seconds, 30 by default, well under the SDK's 90 s) and
answer as soon as there is something to say: a worker never spins, and an idle worker costs
the endpoint one request per ``hold`` per poll plus its pings. job-done and job-stream bodies
are JSON text sent as ``application/x-www-form-urlencoded``; they are parsed as JSON whatever
the content type says; a body over 20 MB fails its job (RunPod answers 400 as well).
What happens to jobs and workers is :mod:`bridge.local.worker_host`'s part.

**Auth.** Worker routes do not take the endpoint's API key: each :class:`WorkerHost` has its
own random ``token``, given to the workers it starts in ``RUNPOD_AI_API_KEY`` (sent as a raw
``Authorization`` header) and as ``worker_token=`` in every worker URL (because the SDK sends
the key from ``~/.runpod/config.toml`` instead of ``RUNPOD_AI_API_KEY`` when that file exists).
Either one is accepted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from bridge import errors
from bridge.local.worker_host import WorkerHost, WorkerRecord

__all__ = ["HOSTS_KEY", "MAX_RESULT_BYTES", "WorkerHost", "add_worker_routes"]

log = logging.getLogger(__name__)

#: Key of the ``{endpoint_id: WorkerHost}`` dict in the aiohttp app.
HOSTS_KEY = web.AppKey("bridge_worker_hosts", dict)

#: Largest job-done or job-stream body a worker may send (RunPod's /runsync payload limit;
#: RunPod rejects larger results with 400 as well).
MAX_RESULT_BYTES = 20 * 1024 * 1024

#: Delay before answering a worker request that failed authentication, so a misconfigured
#: worker (which the SDK re-polls at once after an error) cannot spin.
_AUTH_FAIL_DELAY = 1.0


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


# -- routes ------------------------------------------------------------------------------


def add_worker_routes(app: web.Application, hosts: dict[str, WorkerHost] | None = None) -> dict[str, WorkerHost]:
    """Serve the worker protocol on ``app``; returns the ``{endpoint_id: WorkerHost}`` it dispatches to.

    Call once, before the app starts (aiohttp freezes its router then). Endpoints that run
    real workers are added to the returned dict at any time, e.g. with :func:`new_host`;
    worker requests for any other endpoint id get 404. Pass ``hosts`` to share a dict the
    caller already holds.
    """
    hosts = hosts if hosts is not None else {}
    app[HOSTS_KEY] = hosts
    prefix = "/v2/{endpoint_id}"
    app.router.add_get(prefix + "/job-take/{worker_id}", _take_route)
    app.router.add_get(prefix + "/job-take-batch/{worker_id}", _take_route)
    app.router.add_get(prefix + "/job-stop/{worker_id}", _stop_route)
    app.router.add_post(prefix + "/job-done/{worker_id}/{job_id}", _done_route)
    app.router.add_post(prefix + "/job-stream/{worker_id}/{job_id}", _stream_route)
    app.router.add_get(prefix + "/ping/{worker_id}", _ping_route)
    return hosts


def _authorised(host: WorkerHost, request: web.Request) -> bool:
    offered = [request.query.get("worker_token", "")]
    header = request.headers.get("Authorization", "")
    offered.append(header[7:] if header.lower().startswith("bearer ") else header)
    return any(o and hmac.compare_digest(o.encode(), host.token.encode()) for o in offered)


async def _host_and_record(request: web.Request) -> tuple[WorkerHost, WorkerRecord]:
    hosts = request.app.get(HOSTS_KEY) or {}
    host = hosts.get(request.match_info["endpoint_id"])
    if host is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"endpoint {request.match_info['endpoint_id']!r} runs no workers"}),
            content_type="application/json",
        )
    host.requests += 1
    host.route_counts[request.path.split("/")[3]] += 1
    if not _authorised(host, request):
        await asyncio.sleep(_AUTH_FAIL_DELAY)
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "worker token missing or wrong (RUNPOD_AI_API_KEY / worker_token)"}),
            content_type="application/json",
        )
    record = host._record(request.match_info["worker_id"])
    if record is None:
        # A retired worker (its process is being stopped) or an unknown one: say "nothing
        # for you" after the usual hold rather than an error the SDK would re-poll at once.
        record = WorkerRecord(request.match_info["worker_id"], retired=True)
    return host, record


async def _read_json(request: web.Request, host: WorkerHost, record: WorkerRecord) -> dict[str, Any]:
    # Read here rather than with request.text(): aiohttp's default body limit is 1 MiB, and a
    # worker's result may be much larger.
    limit = MAX_RESULT_BYTES
    data = bytearray()
    too_big = (request.content_length or 0) > limit
    while not too_big:
        chunk = await request.content.read(1 << 16)
        if not chunk:
            break
        data += chunk
        too_big = len(data) > limit
    if too_big:
        what = "result" if "/job-done/" in request.path else "stream chunk"
        message = f"the worker's {what} for this job is over the {limit // (1024 * 1024)} MB a worker may send"
        host.reject(record, request.match_info["job_id"], message)
        raise web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")
    try:
        body = json.loads(data.decode("utf-8")) if data else {}
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not JSON"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not a JSON object"}), content_type="application/json")
    return body


async def _take_route(request: web.Request) -> web.StreamResponse:
    host, record = await _host_and_record(request)
    batch = request.path.rsplit("/", 2)[-2] == "job-take-batch"
    size = 1
    if batch:
        try:
            size = max(1, int(request.query.get("batch_size", "1")))
        except ValueError:
            size = 1
    if record.retired:
        await asyncio.sleep(min(host.hold, 5.0))
        return web.Response(status=204)
    if request.query.get("job_in_progress") == "0":
        # The SDK says it runs nothing: a stopped job is gone, no need to stop it again.
        record.reported.clear()
        record.stop_pending.clear()
    jobs = await host.take(record, size, lambda: _gone(request))
    if not jobs:
        return web.Response(status=204)
    if batch:
        return web.json_response([j.payload() for j in jobs])
    return web.json_response(jobs[0].payload())


async def _stop_route(request: web.Request) -> web.StreamResponse:
    host, record = await _host_and_record(request)
    ids = await host.stop_signals(record)
    if not ids:
        return web.Response(status=204)
    return web.json_response({"jobsToStop": ids})


async def _done_route(request: web.Request) -> web.StreamResponse:
    host, record = await _host_and_record(request)
    body = await _read_json(request, host, record)
    outcome = host.done(record, request.match_info["job_id"], body)
    if outcome.startswith("dropped"):
        log.info("endpoint %s worker %s job %s: %s", host.endpoint_id, record.worker_id,
                 request.match_info["job_id"], outcome)
    return web.json_response({"result": errors.scrub(outcome)})


async def _stream_route(request: web.Request) -> web.StreamResponse:
    host, record = await _host_and_record(request)
    body = await _read_json(request, host, record)
    return web.json_response({"result": host.stream(record, request.match_info["job_id"], body)})


async def _ping_route(request: web.Request) -> web.StreamResponse:
    host, record = await _host_and_record(request)
    if not record.retired:
        host.ping(record, request.query.get("job_id"))
    return web.json_response({"ok": True})
