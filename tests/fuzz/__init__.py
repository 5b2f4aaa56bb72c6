"""Fuzzing of every decoder that takes bytes from a peer or a client, under Hypothesis.

``test_fuzz.py`` is the short run of the normal test suite (a few seconds); ``python -m
tests.fuzz --executions N`` is the long run, counting executions per target (see
docs/security.md for the figures of the last one).
"""
