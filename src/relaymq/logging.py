"""Structured logging: how every RelayMQ log record is rendered and where it goes.

One call, :func:`configure_logging`, at server start sets the root logger to
write to stderr either readable text lines or JSON lines (one object per
record, with ``time``, ``level``, ``logger``, ``message``, any ``extra=``
fields, and the traceback under ``exception``). Uvicorn's loggers are routed
through the same handler so the whole process speaks one format.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from relaymq.config import LogFormat, LogLevel

# Attributes every LogRecord has; anything else was passed with ``extra=``.
STANDARD_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Browsers cannot send an Authorization header with EventSource or WebSocket, so those
# two endpoints take ``?access_token=``; the access log must never show it.
_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s]*")


class RedactQueryTokens(logging.Filter):
    """Replaces ``access_token=...`` in a record's message arguments with ``access_token=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact, and always keep the record."""
        if isinstance(record.args, tuple):
            record.args = tuple(
                _QUERY_TOKEN.sub(r"\1***", value) if isinstance(value, str) else value
                for value in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _QUERY_TOKEN.sub(r"\1***", record.msg)
        return True


class JsonFormatter(logging.Formatter):
    """Renders a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record, its ``extra`` fields and its exception as a JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``logger.info(..., extra={...})``."""
    return {
        name: value
        for name, value in vars(record).items()
        if name not in STANDARD_RECORD_FIELDS and not name.startswith("_")
    }


def build_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter for a log format setting."""
    if log_format is LogFormat.JSON:
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(level: LogLevel, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Point the root logger (and uvicorn's) at one stderr handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(build_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactQueryTokens) for existing in access.filters):
        access.addFilter(RedactQueryTokens())
