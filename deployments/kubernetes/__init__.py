"""The Kubernetes target: settings, pure manifest builders, the API wrapper and the GitOps export.

`deployments.targets.kubernetes.KubernetesDriver` is the only caller that talks to a cluster;
everything here except `client.py` and `export.py` is pure (plain data in, dicts out).
"""
