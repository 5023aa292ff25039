"""Pipeline stages: plain functions over the manifest and files, importable without Prefect."""
