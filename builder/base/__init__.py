"""Room ``builder.base`` owns the leaves every room stands on: the error tree and its kinds, the state root and its locks, paths inside a root, units, filters, the event log, syscalls, platforms and binfmt, rootless mode, Go templates.
May import: ``registry``, ``grammar`` (and anything inside ``builder.base``); never a room above.
"""
