"""structlog setup: one JSON object per line, or human-readable console lines.

Events carry namespaces, ids, sizes and TTLs; never a payload and never a key secret.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route structlog to stderr at ``level`` in ``fmt`` ('json' or 'console')."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str = "stashd") -> Any:  # noqa: ANN401 - structlog's bound logger is dynamic
    """A logger; module-level loggers are fine because configuration is read lazily."""
    return structlog.get_logger(name)
