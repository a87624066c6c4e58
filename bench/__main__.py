"""Run every benchmark area in turn: ``python -m bench [--quick] [AREA ...]``."""

from __future__ import annotations

import importlib
import sys

AREAS = ["client", "local", "celery", "plugins", "batch", "workers", "embedded", "faults", "relay", "waiting"]


def main(argv: list[str]) -> int:
    flags = [a for a in argv if a.startswith("-")]
    areas = [a for a in argv if not a.startswith("-")] or AREAS
    status = 0
    for area in areas:
        print(f"\n===== bench.{area} =====", flush=True)
        module = importlib.import_module(f"bench.{area}")
        saved = sys.argv
        sys.argv = [f"bench.{area}", *flags]
        try:
            result = module.main()
        except SystemExit as exc:  # argparse-based mains exit
            result = exc.code
        finally:
            sys.argv = saved
        status = status or int(result or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
