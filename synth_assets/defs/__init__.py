"""The asset graph, one folder per stage: assets, checks, schedules and sensors of that stage."""
