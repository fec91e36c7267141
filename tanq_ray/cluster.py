"""Joining Ray: the job's cluster under ``ray job submit``, else a local one."""

from __future__ import annotations

from tanq_ray import console
from tanq_ray.config import Config


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
        quiet = terminal is not None and not terminal.verbose
        ray.init(address=config.ray.address, logging_level="ERROR" if quiet else "WARNING", log_to_driver=not quiet)
    if terminal is not None:
        terminal.attach_ray()
