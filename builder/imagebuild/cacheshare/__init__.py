"""A build cache shared through registries and OCI layouts (``build --cache-to/--cache-from``).

``spec`` parses BuildKit's cache flags, ``artifact`` is the exported format (an OCI manifest
whose config blob lists cache records by their content keys and the layer each produced),
``source`` imports one (records first, a layer only when a step or the output needs it),
``export`` writes one. Nothing here is imported unless a build names a cache flag.
"""
