"""The Kubernetes target: the driver, settings, pure manifest builders, the API wrapper and the
GitOps export.

`driver.KubernetesDriver` is the only caller that talks to a cluster; everything here except
`driver.py`, `client.py` and `export.py` is pure (plain data in, dicts out), so this package
imports none of them on its own. Serving images come from the Docker target's builder
(`deployments.targets.docker.images`).
"""
