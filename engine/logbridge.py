"""The bridge that brings the log records of tmbmerge's worker processes to the parent's logging.

The library logs through ``logging`` (loggers named after its modules) and never configures it:
what is shown, and where, is its caller's choice. A merge that runs in a worker process
(``merge-run --jobs N``: fresh processes, spawned) would log into a process with no configuration
at all, and its records would be lost. So each worker sends every record to its parent through the
queue that already carries its progress (``executors.ProgressRelay``), and the parent hands it to
its own logger of the same name (``deliver``), as if it had logged it itself: the record keeps the
worker's process id and time, and the parent's configuration (the command line's ``-v``, a
production tool's handlers) shows it or not.

This module is the one place the library touches logging configuration, and only that of worker
processes it created (``forward_logs``, run when a worker starts).
"""

from __future__ import annotations

import logging


def parent_log_levels() -> dict[str, int]:
    """The levels set on this process's loggers (the root logger's always): a worker takes them,
    so that it sends every record the parent would show and none it would drop."""
    levels = {"": logging.getLogger().level}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


def forward_logs(queue, levels: dict[str, int]) -> None:
    """Worker side: every record of this process goes into ``queue`` (a ``QueueHandler`` on the
    root logger, the only handler of a worker that has no configuration of its own)."""
    import logging.handlers  # in workers only: it imports socket and pickle, off a merge's start-up

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(queue))
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def deliver(record: logging.LogRecord) -> None:
    """Parent side: a worker's record to the parent's logger of its name, if that logger shows
    records of its level."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
