"""The lab: a Kubernetes-API-compatible server on 127.0.0.1 plus node, KubeVirt and BMC simulators.

The operator never imports this package; it talks to the lab only through a kubeconfig.
"""
