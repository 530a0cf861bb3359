"""Structured logging: one JSON object per line (or plain text), ``extra=`` fields merged in."""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(time.time(), 3), "level": record.levelname, "logger": record.name,
                 "msg": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Fields(logging.Filter):
    """Sets the same attributes on every record (a JSON line gets them as fields)."""

    def __init__(self, fields: dict[str, object]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.update(self.fields)
        return True


def setup_logging(level: str = "INFO", fmt: str = "json", quiet: Iterable[str] = (),
                  fields: dict[str, object] | None = None) -> None:
    """One stderr handler on the root logger; loggers in ``quiet`` log warnings and above only.
    ``fields`` go on every line (a gateway worker's ``worker`` index): JSON fields, or
    ``[name value]`` after the logger's name in text."""
    handler = logging.StreamHandler(sys.stderr)
    tags = "".join(f"[{name} %({name})s] " for name in fields or {})
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        f"%(asctime)s %(levelname)s %(name)s {tags}%(message)s"))
    if fields:
        handler.addFilter(_Fields(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
