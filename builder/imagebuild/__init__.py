"""Room ``builder.imagebuild`` owns building images: the Dockerfile front end, the graph of ops, the solver and its cache, step execution, assembly, the build pipeline and its plain progress lines, ``fsck`` (the store's, the cache's and killed builds' check and reaping).
May import: ``builder.base``, ``builder.core``, ``builder.network``, ``registry``, ``grammar`` (and anything inside ``builder.imagebuild``); never a room above.
"""
