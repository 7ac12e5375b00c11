"""The server's log formats: ``--log-format text`` (the default) or ``json``.

Both carry the same fields: the time, the level and the message; and a worker's node id
(``--workers``): ``[NODE-w1]`` before the message, or ``"node"`` in JSON.
"""

from __future__ import annotations

import json
import logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``{"time": ..., "level": ..., "message": ...}``."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (an exception's traceback goes in ``exc_info``)."""
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        if self.node:
            out["node"] = self.node
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def log_formatter(kind: str, node: str | None = None) -> logging.Formatter:
    """The formatter for ``--log-format`` ``kind`` (TEXT or JSON); ``node`` tags each line."""
    if kind.upper() == "JSON":
        return JsonFormatter(node)
    if node:
        tag = node.replace("%", "%%")
        return logging.Formatter(TEXT_FORMAT.replace("%(message)s", f"[{tag}] %(message)s"))
    return logging.Formatter(TEXT_FORMAT)


def tag_log_lines(node: str) -> None:
    """Tag this process's log lines with ``node`` from now on (a worker, after its fork)."""
    for handler in logging.getLogger().handlers:
        kind = "JSON" if isinstance(handler.formatter, JsonFormatter) else "TEXT"
        handler.setFormatter(log_formatter(kind, node))
