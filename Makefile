# Tributary developer entry points. Each target does its own set-up (hack/bootstrap.sh).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: lock setup demo demo-cluster test test-unit test-integration test-e2e control-plane cluster-up cluster-down crds bench clean

setup:
	@bash hack/bootstrap.sh

# Refresh requirements.lock after changing pyproject's dependencies (uv from PyPI resolves in ~2 min).
lock: setup
	$(VENV)/bin/pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 --no-header -o requirements.lock.new
	{ echo '# The resolved dependency set of tributary and its test extra, for Python 3.11+ on any platform.'; \
	  echo '# Used as pip constraints by hack/bootstrap.sh, the Dockerfile and CI. Refresh: make lock'; \
	  cat requirements.lock.new; } > requirements.lock && rm requirements.lock.new

demo: setup
	$(VENV)/bin/tributary demo

# A blue-green re-embedding on the local control plane, printing `kubectl get tributary` as the
# phases move; everything torn down at the end (and on Ctrl-C). Test infrastructure: not in CI.
demo-cluster: setup control-plane
	PYTHONPATH=tests:operator:workers $(PY) hack/demo_cluster.py

# The whole suite: unit, integration (real redis-server and milvus-lite server) and e2e (real
# kube-apiserver + etcd built from Go modules, cached under .cache/).
test: setup control-plane
	$(PY) -m pytest -m "unit or integration or e2e" tests

test-unit: setup
	$(PY) -m pytest -m unit tests

test-integration: setup control-plane
	$(PY) -m pytest -m integration tests

test-e2e: setup control-plane
	$(PY) -m pytest -m e2e tests

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (and helm) from Go modules, cached
# in .cache/control-plane/ (docs/local-control-plane.md).
control-plane:
	@bash hack/build-control-plane.sh >/dev/null

# A local Kubernetes in the background: the four binaries plus the process kubelet (test
# infrastructure: Pods run as local processes); state and logs in .local-cluster/.
cluster-up: setup control-plane
	PYTHONPATH=tests $(PY) -m testenv up

cluster-down:
	PYTHONPATH=tests $(PY) -m testenv down

crds: setup
	$(PY) -m tributary_operator.crdgen crds/

bench: setup
	$(PY) bench/ingest_throughput.py

clean: cluster-down
	rm -rf .tributary .local-cluster .pytest_cache
