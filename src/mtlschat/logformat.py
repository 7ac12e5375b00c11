"""The server's log formats: ``--log-format text`` (the default) or ``json``.

Both carry the same fields: the time, the level and the message.
"""

from __future__ import annotations

import json
import logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``{"time": ..., "level": ..., "message": ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (an exception's traceback goes in ``exc_info``)."""
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def log_formatter(kind: str) -> logging.Formatter:
    """The formatter for ``--log-format`` ``kind`` (TEXT or JSON)."""
    return JsonFormatter() if kind.upper() == "JSON" else logging.Formatter(TEXT_FORMAT)
