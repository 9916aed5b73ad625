"""Logging: plain text or one JSON object per line, with request and upload ids on every record.

The ids come from the request being served (see `tusd_py.observe`), so any logger — ours,
uvicorn's, a store's — gets them without passing them around.
"""

from __future__ import annotations

import json
import logging
import time

from tusd_py.config import LogFormat
from tusd_py.request_context import current_request

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
# uvicorn's `color_message` repeats the message with terminal colours.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class RequestIdsFilter(logging.Filter):
    """Adds `request_id` and `upload_id` (None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current_request.get()
        if not hasattr(record, "request_id"):
            record.request_id = ctx.request_id if ctx is not None else None
        if not hasattr(record, "upload_id"):
            record.upload_id = ctx.upload_id if ctx is not None else None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# Control characters in a text line (a request path with %0a in it) are written escaped, so that
# nothing a client sends can start a line of its own in the log.
_ESCAPED = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_ESCAPED)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [
            f"{key}={value}"
            for key in ("request_id", "upload_id")
            if (value := getattr(record, key, None)) is not None
        ]
        return f"{text} [{' '.join(ids)}]" if ids else text


def configure_logging(log_format: LogFormat = "text", level: str = "info") -> None:
    """One stderr handler on the root logger; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdsFilter())
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Azure SDK logs every request and response, headers included, at info: our access
    # line already says what happened, so only its warnings and errors come through.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def announcement(message: str, log_format: LogFormat, **fields: object) -> str:
    """A start-up line for stdout ("listening on ..."): the message itself as text, or with
    `--log-format json` a JSON object like every other line, so a log shipper parses them all."""
    if log_format != "json":
        return message
    record = logging.makeLogRecord(
        {"name": "tusd_py", "levelno": logging.INFO, "levelname": "INFO", "msg": message, **fields}
    )
    return JSONFormatter().format(record)
