"""Logging for journald: ``key=value`` lines (or JSON), with the call id carried by a LoggerAdapter."""

from __future__ import annotations

import json
import logging
import sys
import threading


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [f"level={record.levelname.lower()}", f"logger={record.name}"]
        for key in ("call_id", "flow"):
            if hasattr(record, key):
                parts.append(f"{key}={getattr(record, key)}")
        msg = record.getMessage()
        parts.append(f"msg={json.dumps(msg) if (' ' in msg or '=' in msg) else msg}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for key in ("call_id", "flow"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    logging.captureWarnings(True)

    def excepthook(args: threading.ExceptHookArgs) -> None:
        logging.getLogger("ivr.thread").error(
            "uncaught exception in thread %s", args.thread.name if args.thread else "?",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        )

    threading.excepthook = excepthook
