"""The operator's pure core: decisions and manifest builders. No kopf, no Kubernetes client."""
