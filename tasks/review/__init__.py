"""The review app: a local web page where people judge faces and record decisions.

A tool over a built dataset, not a stage: it imports only tasks.core and tasks.vision,
reads the manifest the build wrote and appends to `decisions.csv` through
tasks.core.decisions, which the next build honours. `app.serve` starts it
(`faceset review DATASET_DIR`).
"""
