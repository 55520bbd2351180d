"""Room ``builder.system`` owns calls over a whole state root: info, version, df, prune (``engine``) and ``system reset``.
May import: ``builder.base``, ``builder.core``, ``builder.network``, ``builder.imagebuild``, ``builder.runtime``, ``registry``, ``grammar`` (and anything inside ``builder.system``); never a room above.
"""
