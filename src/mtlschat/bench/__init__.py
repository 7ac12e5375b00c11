"""mtlschat.bench

The names the ``mtlschat bench`` command line offers live here, so that building the CLI does
not import the load generator.
"""

WORKLOADS = ("burst", "paced", "connect", "hold", "storm")
# Servers ``--spawn`` / ``--compare`` can start ("mtlschat" runs with ``--history off``,
# "mtlschat-history" with a new history file each time; "floor" is bench/floor_server.py, the
# least a selectors loop can do to relay the same lines, "floor-raw" the same without a prefix).
TARGETS = ("mtlschat", "reference", "mtlschat-history", "floor", "floor-raw")
# ``--compare`` pairs: (numerator, denominator) of the ratios reported.
COMPARISONS = {
    "reference": ("mtlschat", "reference"),
    "history": ("mtlschat-history", "mtlschat"),
    "floor": ("mtlschat", "floor"),
    "floor-raw": ("mtlschat", "floor-raw"),
}
