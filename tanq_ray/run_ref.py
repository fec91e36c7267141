"""Where to log, as plain data that travels to Ray tasks and Ray Train workers.

A :class:`RunRef` names one MLflow run (tracking URI, experiment, run id).
It pickles as three strings, so the driver hands it to an nnUNet fold task or
a training worker, and the worker opens its own client there
(:meth:`handle`). It also creates the child runs of a run (:meth:`child`) and
ends them (:meth:`end`), the one place that knows how a nested run is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from tanq_ray.tracking import RunHandle


@dataclass(frozen=True)
class RunRef:
    """One MLflow run, by name only: safe to send anywhere."""

    tracking_uri: str
    experiment_id: str
    run_id: str

    @classmethod
    def of(cls, handle: RunHandle, tracking_uri: str) -> "RunRef":
        return cls(tracking_uri, handle.experiment_id, handle.run_id)

    def handle(self) -> RunHandle:
        """A live handle for logging, with a client of this process."""
        return RunHandle(MlflowClient(self.tracking_uri), self.run_id, self.experiment_id)

    def child(self, name: str, tags: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> "RunRef":
        """A new RUNNING run nested under this one."""
        client = MlflowClient(self.tracking_uri)
        all_tags = {key: str(value) for key, value in tags.items()} | {"mlflow.parentRunId": self.run_id}
        created = client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        child = RunRef(self.tracking_uri, self.experiment_id, created.info.run_id)
        if params:
            child.handle().log_params(params)
        return child

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Mark the run FINISHED, FAILED or KILLED; a failure keeps its ``error`` as a tag."""
        client = MlflowClient(self.tracking_uri)
        if error is not None:
            client.set_tag(self.run_id, "error", error[:5000])
        client.set_terminated(self.run_id, RunStatus.to_string(getattr(RunStatus, status)))
