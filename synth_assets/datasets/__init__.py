"""Dataset directories: the spec, its validation and the readers of source data."""
