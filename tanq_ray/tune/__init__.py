"""Ray Tune sweeps over translator configurations (PAPER.md Table 2 rows plus grid/random axes)."""
