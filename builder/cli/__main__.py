"""``python -m builder.cli``: the same as the ``pybuild`` console script."""

from builder.cli import main

main()
