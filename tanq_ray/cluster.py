"""Joining Ray: the job's cluster under ``ray job submit``, else a local one."""

from __future__ import annotations

import os

from tanq_ray import console
from tanq_ray.config import Config

STARTUP_CONCURRENCY_VARIABLE = "RAY_worker_maximum_startup_concurrency"
LOCAL_STARTUP_CONCURRENCY = 8
"""Worker processes a local raylet starts at once: at least this many, so a 2-CPU node does not warn.

The raylet warns on every driver's console once its worker processes reach
four times this number, which defaults to the node's CPUs. One translator's
Ray Train run holds about eight processes (controller, worker, dataset
split coordinators, stats and autoscaling actors), so the demo's two at once
crossed 4 x 2 on 2 cores. The variable only reaches a raylet that this process
starts; a cluster joined by address keeps its own setting, and one set in the
environment is kept.
"""


def ensure_ray(config: Config) -> None:
    """``ray.init()`` once per process, with ``ray.address`` when set; opens the console's progress board.

    Without an address Ray joins the cluster of the submitted job (or the
    one named by ``$RAY_ADDRESS``) and otherwise starts a local instance.
    Under a quiet console (:mod:`tanq_ray.console`) worker output is not
    streamed to this process and Ray logs errors only.
    """
    import ray

    terminal = console.active()
    if not ray.is_initialized():
        os.environ.setdefault(STARTUP_CONCURRENCY_VARIABLE, str(max(LOCAL_STARTUP_CONCURRENCY, os.cpu_count() or 1)))
        quiet = terminal is not None and not terminal.verbose
        ray.init(address=config.ray.address, logging_level="ERROR" if quiet else "WARNING", log_to_driver=not quiet)
    if terminal is not None:
        terminal.attach_ray()
