"""Room ``builder.runtime`` owns running containers: records, create/start/stop, the supervisor, exec, logs, attach, volumes, and the image rules that need containers (rmi, inspect, history).
May import: ``builder.base``, ``builder.core``, ``builder.network``, ``builder.imagebuild``, ``registry``, ``grammar`` (and anything inside ``builder.runtime``); never a room above.
"""
