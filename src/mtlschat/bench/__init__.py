"""mtlschat.bench

The names the ``mtlschat bench`` command line offers live here, so that building the CLI does
not import the load generator.
"""

WORKLOADS = ("burst", "paced", "connect", "hold")
TARGETS = ("mtlschat", "reference")  # servers ``--spawn`` / ``--compare`` can start
