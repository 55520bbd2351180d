"""Room ``builder.core`` owns the execution core build steps and containers both run on: layers (tar diffs, unpacked layers), root filesystems (overlay), the sandbox (namespaces, cgroups, seccomp, OCI runtimes).
May import: ``builder.base``, ``registry``, ``grammar`` (and anything inside ``builder.core``); never a room above.
"""
