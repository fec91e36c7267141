import pytest

from tanq_ray.bench.train import measure


@pytest.mark.slow
def test_quick_train_benchmark_reports_every_figure(ray_local) -> None:
    names = [figure.name for figure in measure(quick=True)]
    assert names == [
        "Ray Train, 1 worker(s)", "data stall, 1 worker(s)", "Ray Train, 2 worker(s)", "data stall, 2 worker(s)",
        "plain loop, same model and slices, 1 thread", "Ray Train overhead (1 worker vs plain loop)",
    ]  # fmt: skip
