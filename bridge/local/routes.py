"""HTTP routes of the local endpoint: RunPod's API under ``/v2/{endpoint_id}/`` and the
test-only introspection routes under ``/_bridge/``.

Every ``/v2`` request passes, in order: the API-key check (401, before anything is
recorded, so unauthenticated requests leave no trace), the endpoint lookup (404), request
counting, added latency, the rate limit (429 + ``Retry-After``) and error injection, then
the route itself. Error bodies are ``{"error": "..."}``; every answer is strict JSON
(``bridge.local.bodies``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.local import bodies, policies
from bridge.local.bodies import BodyError
from bridge.local.faults import retry_after_header
from bridge.local.jobs import LocalJob

if TYPE_CHECKING:
    from bridge.local.server import LocalServer, ServedEndpoint

Route = Callable[[web.Request, "ServedEndpoint"], Awaitable[web.StreamResponse]]
_GONE = "job {} not found: unknown, purged, past its ttl, or past result retention"


class _Gone(Exception):
    """The job id is unknown, or the job was deleted (purge, ttl, retention); answered 404."""


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    response = bodies.response({"error": message}, status=status, headers=headers)
    if status == 408:
        # The rest of the body never came: close rather than wait for it. (A 413's sender is
        # still sending; aiohttp reads and drops that for lingering_time, so the answer is
        # not lost to a reset.)
        response.force_close()
    return response


def no_route(request: web.Request) -> web.Response:
    """The answer to a path no route serves (also what /status-sync gives with long polls off)."""
    return error(404, f"no route {request.method} {request.path}")


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """aiohttp's own 404/405 pages become JSON error bodies too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return no_route(request) if exc.status == 404 else error(exc.status, exc.reason)
        raise


class Routes:
    def __init__(self, server: LocalServer) -> None:
        self.server = server

    def install(self, app: web.Application) -> None:
        add = app.router.add_route
        # RunPod's routes; the status and stream reads answer GET and POST alike.
        for methods, path, fn in (
            ("POST", "run", self.run),
            ("POST", "runsync", self.runsync),
            ("GET POST", "status/{job_id}", self.status),
            ("GET POST", "status-sync/{job_id}", self.status_sync),
            ("GET POST", "stream/{job_id}", self.stream),
            ("POST", "cancel/{job_id}", self.cancel),
            ("POST", "retry/{job_id}", self.retry),
            ("POST", "purge-queue", self.purge),
            ("GET", "health", self.health),
        ):
            op = path.split("/", 1)[0]
            for method in methods.split():
                add(method, "/v2/{endpoint_id}/" + path, self._guard(op, fn))
        test = self._guard_test  # bridge's own routes for tests and bench/
        get = functools.partial(web.get, allow_head=False)  # as add_route("GET"): no HEAD
        app.router.add_routes([
            get("/_bridge/stats", test(self.stats)),
            web.post("/_bridge/stats/reset", test(self.reset_stats)),
            get("/_bridge/jobs/{job_id}", test(self.job_state)),
            get("/_bridge/faults", test(self.faults)),
            web.post("/_bridge/faults", test(self.set_faults)),
            get("/_bridge/endpoints", test(self.endpoints)),
        ])

    # -- the pipeline every request passes -----------------------------------------------

    def authorised(self, request: web.Request) -> bool:
        key = self.server.api_key
        if not key:
            return True
        given = request.headers.get("Authorization", "").strip()
        if given[:7].lower() == "bearer ":
            given = given[7:].strip()
        return hmac.compare_digest(given.encode(), key.encode())

    def _guard(self, op: str, fn: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        server = self.server

        async def handle(request: web.Request) -> web.StreamResponse:
            if op == "status-sync" and not server.long_poll:
                return self._no_long_poll(request)
            # The key first: a request without it must not grow any table (stats, jobs, keys).
            if not self.authorised(request):
                return error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
            endpoint_id = request.match_info["endpoint_id"]
            endpoint = server.endpoints.get(endpoint_id)
            if endpoint is None:  # not counted: any id would add a stats entry
                return error(404, f"unknown endpoint {endpoint_id!r}")
            server.count(endpoint_id, op)
            delay = server.faults.delay_for(op)
            if delay > 0:
                await asyncio.sleep(delay)
            wait = server.faults.throttle(endpoint_id, op)
            if wait > 0:
                return error(429, f"rate limit for {op} exceeded; retry later",
                             {"Retry-After": retry_after_header(wait)})
            if server.faults.inject_error(op):
                return error(server.faults.error_status, f"injected fault on {op} (error_rate)")
            try:
                return await fn(request, endpoint)
            except policies.PolicyError as exc:
                return error(400, str(exc))
            except BodyError as exc:
                return error(exc.status, exc.message)
            except _Gone as exc:
                return error(404, _GONE.format(exc.args[0]))

        return handle

    def _no_long_poll(self, request: web.Request) -> web.Response:
        """/status-sync on a server without long polls: the unknown-route 404, before any
        other check (as the router would). Counted, for a known endpoint and a valid key
        only, so tests and benchmarks see whether a client keeps asking."""
        endpoint_id = request.match_info["endpoint_id"]
        if self.authorised(request) and endpoint_id in self.server.endpoints:
            self.server.count(endpoint_id, "status-sync")
        return no_route(request)

    def _guard_test(self, fn: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not self.authorised(request):
                return error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
            return await fn(request)

        return handle

    # -- RunPod's routes ------------------------------------------------------------------

    async def _submit(self, request: web.Request, ep: ServedEndpoint, sync: bool) -> LocalJob | web.Response:
        limit = ep.options.max_runsync_bytes if sync else ep.options.max_run_bytes
        route = "runsync" if sync else "run"
        too_big = (f"request body over the {limit // (1024 * 1024)} MB limit of /{route}; "
                   "upload large inputs elsewhere and pass a URL")
        raw = await bodies.read_body(request, limit, self.server.body_timeout, too_big)
        body = bodies.loads(raw) if raw else None
        if not isinstance(body, dict) or "input" not in body:
            return error(400, 'request body must be a JSON object with an "input" key')
        webhook = body.get("webhook")
        if webhook is not None and not isinstance(webhook, str):
            return error(400, "webhook must be a URL string")
        s3 = body.get("s3Config")
        execution, ttl, low = policies.apply_policy(body.get("policy"), ep.options, self.server.profile)
        key = request.headers.get("Idempotency-Key") or None
        if key is not None:
            known = ep.store.by_idempotency_key(key)
            if known is not None:
                return known
        job = LocalJob(
            id=ep.store.new_id(sync), input=body["input"], webhook=webhook,
            policy=body.get("policy") or {}, s3_config=s3 if isinstance(s3, dict) else None,
            sync=sync, low_priority=low, execution_timeout=execution, ttl=ttl,
            retention=ep.options.sync_retention if sync else ep.options.retention, idempotency_key=key,
        )
        return ep.store.submit(job)

    async def run(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        job = await self._submit(request, ep, sync=False)
        if isinstance(job, web.Response):
            return job
        return self._job_answer(job, {"id": job.id, "status": job.status})

    async def runsync(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        wait = policies.runsync_wait(request.query.get("wait"), ep.options, self.server.profile)
        job = await self._submit(request, ep, sync=True)
        if isinstance(job, web.Response):
            return job
        await ep.store.wait(job, wait)
        self._still_there(ep, job)
        if job.terminal:
            return bodies.response(job.status_body())
        return self._job_answer(job, {"id": job.id, "status": job.status})

    def _job(self, request: web.Request, ep: ServedEndpoint) -> LocalJob:
        job = ep.store.get(request.match_info["job_id"])
        if job is None:
            raise _Gone(request.match_info["job_id"])
        return job

    def _job_answer(self, job: LocalJob, body: dict[str, Any]) -> web.Response:
        """A job-shaped answer; the test-only ``status_override`` fault may change its status."""
        if not job.terminal:
            body["status"] = self.server.faults.shown_status(job.id, body["status"])
        return bodies.response(body)

    @staticmethod
    def _still_there(ep: ServedEndpoint, job: LocalJob) -> None:
        # After a wait: the job may have been purged or reached its ttl meanwhile.
        if ep.store.get(job.id) is not job:
            raise _Gone(job.id)

    async def status(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        job = self._job(request, ep)
        return self._job_answer(job, job.status_body())

    async def status_sync(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        job = self._job(request, ep)
        await ep.store.wait(job, policies.poll_wait(request.query.get("wait"), default=90.0))
        self._still_there(ep, job)
        return self._job_answer(job, job.status_body())

    async def stream(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        job = self._job(request, ep)
        # An optional ?wait=ms holds the call until a chunk arrives or the job ends.
        wait = policies.poll_wait(request.query.get("wait"), default=0.0)
        if wait > 0:
            await ep.store.wait(job, wait, for_chunks=True)
            self._still_there(ep, job)
        return self._job_answer(job, job.drain())

    async def cancel(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        job = self._job(request, ep)
        ep.store.cancel(job)  # an already finished job keeps (and reports) its status
        return bodies.response({"id": job.id, "status": job.status})

    async def retry(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        job = self._job(request, ep)
        if not ep.store.retry(job):
            return error(400, f"job {job.id} is {job.status}; only FAILED, TIMED_OUT and CANCELLED jobs can be retried")
        return bodies.response({"id": job.id, "status": job.status})

    async def purge(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        return bodies.response({"removed": ep.store.purge(), "status": "completed"})

    async def health(self, request: web.Request, ep: ServedEndpoint) -> web.StreamResponse:
        return bodies.response(ep.health())

    # -- test-only routes -------------------------------------------------------------------

    async def stats(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.query.get("endpoint")
        if endpoint:
            return bodies.response(self.server.stats(endpoint))
        return bodies.response(self.server.all_stats())

    async def reset_stats(self, request: web.Request) -> web.StreamResponse:
        self.server.reset_stats()
        return bodies.response({"status": "reset"})

    async def job_state(self, request: web.Request) -> web.StreamResponse:
        state = self.server.job_state(request.match_info["job_id"])
        if state is None:
            return error(404, _GONE.format(request.match_info["job_id"]))
        return bodies.response(state)

    async def faults(self, request: web.Request) -> web.StreamResponse:
        return bodies.response(self.server.faults.describe())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await bodies.read_body(request, 1024 * 1024, self.server.body_timeout,
                                         "fault settings over 1 MB")
            settings: Any = bodies.loads(raw, "the fault settings")
            if not isinstance(settings, dict):
                raise ValueError("body must be a JSON object of fault settings")
            self.server.set_faults(**settings)
        except BodyError as exc:
            return error(exc.status, exc.message)
        except (ValueError, TypeError) as exc:
            return error(400, str(exc))
        return bodies.response(self.server.faults.describe())

    async def endpoints(self, request: web.Request) -> web.StreamResponse:
        return bodies.response({ep_id: ep.describe() for ep_id, ep in self.server.endpoints.items()})
