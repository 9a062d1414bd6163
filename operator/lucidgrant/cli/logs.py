"""The operator's log lines: text for people, JSON lines for log pipelines.

Both carry the logger's full name (kopf's own format cuts it to 20 characters) and, for kopf's
per-object messages, the object as namespace/name."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# kopf logs every handled watch event at INFO and httpx every request: at thousands of grants
# that is noise, so they speak only with --verbose.
NOISY = ("kopf.objects", "httpx", "aiohttp.access")


def _object(record: logging.LogRecord) -> str | None:
    ref: Any = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    namespace = ref.get("namespace")
    return f"{namespace}/{ref['name']}" if namespace else str(ref["name"])


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        obj = _object(record)
        if obj is None:
            return line
        head, sep, rest = line.partition(": ")
        return f"{head}: [{obj}] {rest}" if sep else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, message; object and
    exception when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        obj = _object(record)
        if obj is not None:
            entry["object"] = obj
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str, verbose: bool) -> None:
    """Replace the root logger's handlers with one on stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # asyncio's debug chatter (slow callbacks, selector choice) is not the operator's.
    logging.getLogger("asyncio").setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
