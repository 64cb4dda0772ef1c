"""Test infrastructure: a local Kubernetes from Kubernetes' own binaries, plus a process kubelet.

`control_plane` runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
127.0.0.1; `kubelet` registers a Node and runs the Pods bound to it as local processes
(`runtime`, `podworker`, `podenv`, `podstatus`). `python -m testenv up|down|status` is the CLI.
"""
