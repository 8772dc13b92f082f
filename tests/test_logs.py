"""Structured logs: a record's extra fields are written as fields; nothing carries terminal codes."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from matchbox.logs import JsonFormatter, LogfmtFormatter, configure


def record(**extra: object) -> logging.LogRecord:
    fields = {"name": "uvicorn.error", "levelno": logging.INFO, "levelname": "INFO"}
    return logging.makeLogRecord({**fields, "msg": "Started server process [%d]", "args": (42,), **extra})


def test_a_record_s_fields_are_written_and_uvicorn_s_coloured_copy_of_the_message_is_not() -> None:
    """Uvicorn logs ``color_message``, the message again with ANSI colour codes: a log file, text
    or JSON, gets the plain message and the record's own fields, and no escape code."""
    coloured = record(color_message="Started server process [\x1b[36m%d\x1b[0m]", port=8080)
    text = LogfmtFormatter().format(coloured)
    assert "\x1b" not in text
    assert text.endswith("uvicorn.error Started server process [42] port=8080")
    data = msgspec.json.decode(JsonFormatter().format(coloured))
    assert (data["msg"], data["port"], "color_message" in data) == ("Started server process [42]", 8080, False)


def test_a_log_file_rotates_by_size_and_keeps_its_backups(tmp_path: Path) -> None:
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        configure("INFO", "text", tmp_path / "logs" / "engine.log", max_bytes=2048, backups=2)
        for n in range(200):
            logging.getLogger("matchbox.test").info("line %d", n, extra={"pad": "x" * 40})
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = kept[0]
        root.setLevel(kept[1])
    files = sorted(path.name for path in (tmp_path / "logs").iterdir())
    assert files == ["engine.log", "engine.log.1", "engine.log.2"]  # two backups, no more
    assert all((tmp_path / "logs" / name).stat().st_size <= 2048 + 200 for name in files)
    assert "line 199" in (tmp_path / "logs" / "engine.log").read_text()  # the newest in the live file
