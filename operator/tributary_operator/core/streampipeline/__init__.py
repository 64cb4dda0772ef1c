"""StreamPipeline, pure: pre-flight checks, the worker Deployment and routing targets (manifests),
the scaling decision (scaling) and the status it gives (status)."""
