"""Multi-host networking's shared state: an etcd v3 cluster (``etcd``), this host's membership
in it (``membership``: ``cluster join|leave|ls``, the host lease) and the per-host agent that
keeps the lease alive and follows the store (``agent``). Nothing here is imported unless a
state root has joined a cluster (or ``PYBUILD_CLUSTER_STORE`` is set): ``requests`` is heavy.
"""
