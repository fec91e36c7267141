"""``tanq bench <what>``: measurements printed as a table and written as JSON."""
