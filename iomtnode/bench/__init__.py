"""`iomtnode bench`: a localnet of real processes measured against this machine's ceiling.

``plan`` (which phases, rates and lengths), ``run`` (the run), ``phase`` (one timed phase
and its load process), ``bootstrap`` (a fresh node syncing the chain), ``machine`` (verify
rate, /proc readings), ``summary`` (the JSON result), ``progress`` and ``report`` (stderr
bars, the stdout table), ``plot`` (latency against offered rate, needs matplotlib).
"""
