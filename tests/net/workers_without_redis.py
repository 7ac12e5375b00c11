"""``mtlschat server`` with ``--workers N`` allowed without ``--redis`` (N separate rooms).

Until the real Redis fixture is in, the supervisor's tests run it through this wrapper:
``python workers_without_redis.py python -m mtlschat server ...`` (the ``prefix`` of
``ServerProcess``). Only the "needs --redis" check is switched off; the rest is the real CLI.
"""

from __future__ import annotations

import sys

from mtlschat.cli.main import main
from mtlschat.net.config import ServerConfig

if __name__ == "__main__":
    ServerConfig.check_workers = lambda self: None  # type: ignore[method-assign]
    sys.argv = ["mtlschat", *sys.argv[4:]]  # (drop "PYTHON -m mtlschat")
    main()
