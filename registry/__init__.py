"""Images as content: the OCI model, the local store, archives and the distribution client.

Pure Python; never imports ``builder``.
"""
