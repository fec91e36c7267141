"""Data: the phantom cohort, NIfTI IO and resampling, slicing, Parquet shards."""
