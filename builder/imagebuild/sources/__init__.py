"""Remote sources of ``ADD``: git repositories (``git``) and URLs (``url``): what they resolve to
for a cache key, and how they are fetched; errors as one line naming the source at fault."""
