"""Prefect flows and the `faceset` command line: orchestration only, no stage logic."""
