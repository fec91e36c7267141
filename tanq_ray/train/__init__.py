"""Ray Train for the translators: the per-worker loop and the launcher that drives it."""
