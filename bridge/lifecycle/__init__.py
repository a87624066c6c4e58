"""One job lifecycle for every caller: the Celery tasks, ``bridge batch``, ``bridge run`` and
the clients. See :mod:`bridge.lifecycle.plans` for the walk of one job."""
