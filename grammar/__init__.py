"""The Lark grammars of pybuild and the one loader that builds (and caches) their parsers."""
