"""The shared core every stage may use: recipe, manifest, paths, errors, writers, binning, parallel mappers."""
