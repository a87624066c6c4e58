"""How one worker process is launched: its argv, the environment the runpod SDK reads, and
how its exit is described. Used by :mod:`bridge.local.worker_procs`."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from collections.abc import Mapping, Sequence

from bridge import errors

#: Variables a parent environment may carry that would make the SDK do something else than
#: poll this endpoint (e.g. start its own HTTP server).
_DROP_ENV = ("RUNPOD_REALTIME_PORT", "RUNPOD_REALTIME_CONCURRENCY", "RUNPOD_WEBHOOK_JOB_STREAM")


def worker_env(
    base_url: str,
    endpoint_id: str,
    worker_id: str,
    token: str,
    *,
    ping_interval: float = 10.0,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment that makes a runpod worker poll ``base_url`` (``http://host:port/v2``).

    Placeholders stay for the SDK to fill: ``$ID`` (worker id in the job-take URL, job id in
    the result URLs) and ``$RUNPOD_POD_ID`` (worker id). The job-take URL carries a query
    already because the SDK appends ``&job_in_progress=...`` to it.
    """
    env = dict(os.environ if base is None else base)
    for name in _DROP_ENV:
        env.pop(name, None)
    query = f"?gpu=bridge-local&worker_token={token}"
    root = f"{base_url.rstrip('/')}/{endpoint_id}"
    env.update({
        "RUNPOD_WEBHOOK_GET_JOB": f"{root}/job-take/$ID{query}",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{root}/job-done/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{root}/job-stream/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_PING": f"{root}/ping/$RUNPOD_POD_ID{query}",
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_ENDPOINT_ID": endpoint_id,
        "RUNPOD_AI_API_KEY": token,
        # Without these the SDK's start-up checks connect to 8.8.8.8 and look for a GPU.
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true",
        "RUNPOD_PING_INTERVAL": str(max(1000, int(ping_interval * 1000))),
        # Worker output is forwarded line by line; a block-buffered child would hold it back.
        "PYTHONUNBUFFERED": "1",
    })
    # The SDK logs every request at its default level (DEBUG); keep the user's choice if any.
    env.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    return env


def split_command(command: str | Sequence[str], cwd: str | None = None) -> list[str]:
    """The argv of a worker command; raises ConfigurationError if it cannot be run: an
    empty command, a program not found, or ``python SCRIPT.py`` naming a script that does
    not exist (relative to ``cwd``, default the current directory)."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise errors.ConfigurationError("the worker command is empty", None, None,
                                        "--worker-command / worker_command, e.g. \"python handler.py\"")
    if shutil.which(argv[0]) is None and not os.path.isfile(argv[0]):
        raise errors.ConfigurationError(
            f"worker command {argv[0]!r} was not found", None, None,
            "PATH (or give the interpreter's full path, e.g. .venv/bin/python handler.py)",
        )
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("python") and argv[1].endswith(".py"):
        script = os.path.join(cwd or os.getcwd(), argv[1])
        if not os.path.isfile(script):
            raise errors.ConfigurationError(
                f"worker script {argv[1]!r} does not exist", None, None,
                f"the script path in the worker command (relative to {cwd or os.getcwd()})",
            )
    return argv


def die_with_parent() -> None:
    # Runs in the child before exec (Linux): SIGTERM it if the server process dies without
    # stopping its workers (kill -9), instead of leaving them polling a dead port.
    # prctl(PR_SET_PDEATHSIG=1, SIGTERM); best effort where there is no prctl.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def loopback(base_url: str) -> str:
    # A server bound to every interface is still reached on loopback by its own workers.
    return base_url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by {name}"
    return f"exited with code {code}"
