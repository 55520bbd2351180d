"""Making and running containers: Dockerfile front end, build graph, execution core."""
