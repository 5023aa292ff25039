"""Small fakes shared by tests: flow stages, taggers, detectors (real files and manifests, no models)."""
