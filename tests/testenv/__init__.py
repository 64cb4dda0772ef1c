"""Development and test support for the operator.

`control_plane` runs a real kube-apiserver and etcd on 127.0.0.1 (the envtest approach), so the
operator and the CRDs are exercised against the real API machinery without Docker or a cluster.
"""
