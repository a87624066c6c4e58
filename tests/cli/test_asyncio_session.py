"""Issue 12 item 8: ``AsyncioEndpoint("ep")`` without a session, used the SDK's way
(``asyncio.run(main())`` with ``await ep.run(...)``, no ``close()``), leaves no "Unclosed
client session" / "Unclosed connector" behind, in a real interpreter run to its exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from .conftest import ROOT, Cli

SCRIPT = textwrap.dedent("""
    import asyncio, bridge

    ep = bridge.AsyncioEndpoint("ep")                  # no session, never closed

    async def main():
        job = await ep.run({"x": 1})
        print(await job.output())
        print(await ep.run_sync({"y": 2}))

    asyncio.run(main())
    asyncio.run(main())                                # the same endpoint on a second loop
""")


def test_asyncio_endpoint_without_a_session_leaves_no_unclosed_warnings(cli: Cli) -> None:
    # -X dev shows every ResourceWarning; "error" turns any left into a failure on stderr.
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", SCRIPT], cwd=ROOT,
                          env=cli.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["{'x':", "1}", "{'y':", "2}"] * 2
    assert "Unclosed" not in done.stderr and "ResourceWarning" not in done.stderr, done.stderr
    assert cli.local.stats("ep")["run"] == 2 and cli.local.stats("ep")["runsync"] == 2
