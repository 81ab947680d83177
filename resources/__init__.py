"""Dagster resources: the outside systems the assets and sensors talk to."""
