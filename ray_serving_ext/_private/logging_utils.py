"""Per-component log files under the Ray session's log directory (`logs/serve/`)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from typing import Any, Dict, List, Optional

SERVE_LOGGER_NAME = "ray_serving_ext"


def serve_logs_dir() -> str:
    """`<ray session>/logs/serve`, or a temp dir when no Ray node is known."""
    try:
        import ray

        node = ray._private.worker._global_node
        base = node.get_logs_dir_path() if node is not None else None
    except Exception:
        base = None
    if not base:
        import tempfile

        base = os.path.join(tempfile.gettempdir(), "ray_serving_ext_logs")
    path = os.path.join(base, "serve")
    os.makedirs(path, exist_ok=True)
    return path


class _Formatter(logging.Formatter):
    """logging.Formatter whose date text is made once per second, not once per line
    (strftime is a fifth of the cost of an access line)."""

    _second = -1
    _second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return "%s,%03d" % (self._second_text, record.msecs)


def log_access(logger: logging.Logger, pathname: str, lineno: int, msg: str, args: tuple,
               extra: Dict[str, Any]) -> None:
    """`logger.info(msg, *args, extra=extra)` for the one-per-request access line, with the
    caller's file and line given rather than found by walking the stack each time."""
    if logger.isEnabledFor(logging.INFO):
        logger.handle(logger.makeRecord(logger.name, logging.INFO, pathname, lineno, msg, args, None, None, extra))


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with the serve fields when a record carries them."""

    FIELDS = ("component", "app", "deployment", "replica", "request_id", "route", "method", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        data: Dict[str, Any] = {
            "asctime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "filename": record.filename,
            "lineno": record.lineno,
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_component_logger(
    component: str, component_id: str, *, encoding: str = "TEXT", level: Any = "INFO", logs_dir: Optional[str] = None
) -> str:
    """Send the package's logs in this process to `<logs_dir>/<component>_<id>.log`; returns the path."""
    path, handler = _buffered_file_handler(component, component_id, encoding, logs_dir)
    logger = logging.getLogger(SERVE_LOGGER_NAME)
    for old in list(logger.handlers):
        if getattr(old, "_serve_component", False):
            logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else str(level).upper())
    logger.propagate = False  # keep serve logs out of the driver's console
    return path


def access_logger(component: str, component_id: str, *, encoding: str = "TEXT",
                  logs_dir: Optional[str] = None) -> logging.Logger:
    """A logger writing to `<logs_dir>/<component>_<id>.log` only: for the access lines a
    process writes in another component's name (a replica's direct ingress writes the
    proxy's), so that each log file keeps one kind of line."""
    logger = logging.getLogger(f"{_OWN_FILE_LOGGERS}.{component}_{component_id}")
    if not logger.handlers:
        _, handler = _buffered_file_handler(component, component_id, encoding, logs_dir)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        _own_file_loggers.append(logger)
    return logger


# Loggers of access_logger (outside SERVE_LOGGER_NAME, so the process's own file never gets their lines).
_OWN_FILE_LOGGERS = "ray_serving_ext_files"
_own_file_loggers: List[logging.Logger] = []


def _buffered_file_handler(component: str, component_id: str, encoding: str,
                           logs_dir: Optional[str]) -> "tuple[str, logging.Handler]":
    directory = logs_dir or serve_logs_dir()
    os.makedirs(directory, exist_ok=True)
    safe_id = component_id.replace("/", "_").replace("#", "_").replace(":", "_")
    path = os.path.join(directory, f"{component}_{safe_id}.log")
    file_handler = logging.FileHandler(path)
    if str(encoding).upper() == "JSON":
        file_handler.setFormatter(JSONFormatter())
    else:
        file_handler.setFormatter(
            _Formatter(f"%(levelname)s %(asctime)s {component} {component_id} %(filename)s:%(lineno)d - %(message)s")
        )
    # Access lines are buffered (flushed every push interval, at once for warnings)
    # so writing one per request does not cost a write system call each.
    handler = logging.handlers.MemoryHandler(capacity=512, flushLevel=logging.WARNING, target=file_handler)
    handler._serve_component = True  # type: ignore[attr-defined]
    return path, handler


def flush_logs() -> None:
    """Write out buffered log records of this process."""
    for logger in [logging.getLogger(SERVE_LOGGER_NAME), *_own_file_loggers]:
        for handler in logger.handlers:
            handler.flush()


class RateLimitFilter(logging.Filter):
    """Lets through at most `per_second` records a second (each second's excess is
    counted and reported with the next record that passes)."""

    def __init__(self, per_second: int = 5) -> None:
        super().__init__()
        self.per_second = per_second
        self._second = -1
        self._count = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        second = int(record.created)
        if second != self._second:
            self._second, self._count = second, 0
        self._count += 1
        if self._count > self.per_second:
            self._dropped += 1
            return False
        if self._dropped:
            record.msg = f"{record.msg} ({self._dropped} similar lines dropped)"
            self._dropped = 0
        return True


def route_uvicorn_logs() -> None:
    """uvicorn's own warnings (one per malformed request) and the event loop's errors (a
    client connection that broke a protocol) go to this process's serve log, rate-limited,
    instead of to stderr: a client sending junk cannot flood the disk."""
    ours = [h for h in logging.getLogger(SERVE_LOGGER_NAME).handlers if getattr(h, "_serve_component", False)]
    for name in ("uvicorn.error", "uvicorn", "asyncio"):
        uv = logging.getLogger(name)
        uv.handlers = list(ours)
        uv.propagate = False
        if not any(isinstance(f, RateLimitFilter) for f in uv.filters):
            uv.addFilter(RateLimitFilter())
