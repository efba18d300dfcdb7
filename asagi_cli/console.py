"""What the CLI prints while work runs: each run's outcome, the progress lines the work
logs (``asagi_dagster.progress``), and, after a silence, what it is still waiting on, so
that a long step never looks hung."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
import dagster as dg

from asagi_dagster.progress import MARK, is_progress

QUIET_AFTER_S = 10.0  # a line at least this often while work runs


class Console:
    def __init__(self, quiet_after_s: float = QUIET_AFTER_S, echo: Callable[[str], None] = click.echo):
        self.quiet_after_s, self.echo = quiet_after_s, echo
        self.lock = threading.Lock()
        self.last_line = time.monotonic()
        self.activity: tuple[str, float] | None = None  # what runs, since when
        self.watcher: threading.Thread | None = None

    def say(self, line: str) -> None:
        with self.lock:
            self.echo(line)
            self.last_line = time.monotonic()

    @contextmanager
    def running(self, what: str) -> Iterator[None]:
        """While the block runs, a silence of ``quiet_after_s`` is broken by a line naming ``what``."""
        self.activity = (what, time.monotonic())
        if self.watcher is None:
            self.watcher = threading.Thread(target=self._watch, name="asagi-console", daemon=True)
            self.watcher.start()
        try:
            yield
        finally:
            self.activity = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            activity = self.activity
            if activity is not None and time.monotonic() - self.last_line >= self.quiet_after_s:
                what, since = activity
                self.say(f"  {what}: still running ({time.monotonic() - since:.0f} s)")

    def logger_def(self) -> dg.LoggerDefinition:
        """A Dagster logger that says the runs' progress lines on this console."""
        console = self

        class ProgressHandler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                meta = getattr(record, "dagster_meta", None)
                message = meta["orig_message"] if meta else record.getMessage()
                if isinstance(message, str) and is_progress(message):
                    console.say("  " + message[len(MARK) :])

        @dg.logger(config_schema=None, description="The CLI's console: progress lines only")
        def progress_console(_init_context) -> logging.Logger:
            logger = logging.getLogger(f"asagi.console.{id(console)}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.handlers = [ProgressHandler()]
            return logger

        return progress_console
