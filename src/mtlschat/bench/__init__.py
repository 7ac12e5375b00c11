"""mtlschat.bench

The names the ``mtlschat bench`` command line offers live here, so that building the CLI does
not import the load generator.
"""

WORKLOADS = ("burst", "paced", "connect", "hold", "storm")
# Servers ``--spawn`` / ``--compare`` can start ("mtlschat" runs with ``--history off``,
# "mtlschat-history" with a new history file each time).
TARGETS = ("mtlschat", "reference", "mtlschat-history")
# ``--compare`` pairs: (numerator, denominator) of the ratios reported.
COMPARISONS = {"reference": ("mtlschat", "reference"), "history": ("mtlschat-history", "mtlschat")}
