"""Structured logs: every record is a message plus fields, as logfmt text or one JSON object a line."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matchbox.settings import Settings
import sys
import time
from typing import Any

import msgspec

# attributes every LogRecord has; anything else on a record came in through ``extra=``. Uvicorn
# adds ``color_message``, its message again with terminal colour codes: a log file gets none.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class LogfmtFormatter(logging.Formatter):
    """``2026-11-25T10:00:00.123Z info matchbox.leader leading epoch=3 offset=...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [stamp, record.levelname.lower(), record.name, record.getMessage()]
        parts += [f"{key}={_value(value)}" for key, value in fields_of(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(data, enc_hook=str).decode()


def _value(value: object) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def configure(
    level: str = "INFO", fmt: str = "text", file: Path | None = None, max_bytes: int = 0, backups: int = 0
) -> None:
    """Logs to stderr, or to ``file``, rotated once it passes ``max_bytes`` (``backups`` kept:
    ``<file>.1`` the newest), so a process that runs for months never fills its disk."""
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def configure_from(settings: Settings) -> None:
    """``configure`` with a process's settings (``MATCHBOX_LOG_*``)."""
    configure(settings.log_level, settings.log_format, settings.log_file, settings.log_max_bytes, settings.log_backups)
