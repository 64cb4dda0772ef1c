"""What both planes share: the only part of the data plane the operator may import.

- ``env``         every TRIBUTARY_* variable a worker reads, by name;
- ``defaults``    every default a CRD field and a worker flag share;
- ``keys``        Redis key prefixes, checkpoint keys and their ConfigMap form;
- ``checkpoints`` the checkpoint JSON a shard writes and the operator reads for progress;
- ``routing``     the routing record the operator writes and the streaming workers follow;
- ``backpressure`` the backpressure record the operator writes and the producers follow.

Nothing here imports a model, Milvus or kopf: only pydantic and the standard library.
"""
