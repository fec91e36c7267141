"""Joining Ray: the job's cluster under ``ray job submit``, else a local one."""

from __future__ import annotations

from tanq_ray.config import Config


def ensure_ray(config: Config) -> None:
    """``ray.init()`` once per process, with ``ray.address`` when set.

    Without an address Ray joins the cluster of the submitted job (or the
    one named by ``$RAY_ADDRESS``) and otherwise starts a local instance.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=config.ray.address, logging_level="WARNING")
