"""Containers: records and state under the state root, the per-container supervisor, and the
lifecycle verbs (create, run, start, stop, kill, rm, exec, cp, logs…) on the execution core.
"""
