"""The ``alignkit`` command line.

Each subcommand lives in its own module under ``alignkit/commands/`` and exposes
``add_parser(subparsers)`` (which registers its parser and sets ``func``). Modules are imported
when the CLI starts, so a broken one shows up in ``alignkit --help`` at once, not in a later run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from alignkit.errors import CLI_ERRORS, Interrupted

# One entry per subcommand module, in the order ``--help`` lists them.
COMMAND_MODULES = ("quickstart", "train", "eval", "report", "push", "env")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignkit",
        description="Preference alignment and machine unlearning on Hugging Face models (TRL-style).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"alignkit.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"alignkit.commands.{name}":
                raise
            continue  # a subcommand not built yet in this checkout
        module.add_parser(sub)
    return parser


class _WarningLines(logging.Handler):
    """alignkit's logged warnings as ``warning: ...`` lines on the current stderr. Without a handler
    Python's last-resort one printed them bare, like a progress line (an AltPO run on empty alternates
    looked informational)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)


def show_warnings() -> None:
    logger = logging.getLogger("alignkit")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    show_warnings()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # Only ``train`` forwards unknown flags (recipe overrides); elsewhere they are errors.
    if rest and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if getattr(args, "accepts_extra", False):
        args.extra = rest
    try:
        return int(args.func(args) or 0)
    except CLI_ERRORS as err:
        return report_error(err)
    except KeyboardInterrupt:  # Ctrl-C: a command that saves state says where (``Interrupted``)
        return report_error(Interrupted("interrupted (Ctrl-C)"))


def report_error(err: BaseException) -> int:
    """The one place a user error becomes ``error: <one line>`` on stderr (no traceback).

    Under a multi-process launch every rank meets the same mistake; only rank 0 prints it.
    """
    if int(os.environ.get("RANK", "0")) == 0:
        message = " ".join(str(err).split())  # one line, whatever the message's own newlines
        print(f"error: {message}", file=sys.stderr, flush=True)
    return getattr(err, "exit_code", 2)


def entry() -> None:
    """The console script (and ``python -m alignkit.cli``): ``main``, then the process ends.

    A launched rank (``WORLD_SIZE`` > 1) leaves with ``os._exit`` once its streams and logs are flushed:
    the run has finished, saved and torn its process group down by then, but gloo's threads can still
    make the interpreter's own shutdown abort ("terminate called without an active exception", exit -6).
    Nothing runs after ``main`` here, so skipping shutdown is the certain cure on this path; scripts that
    use the Python API get :mod:`alignkit.trainers.process_exit`'s exit handler instead (which this skips).
    Any other process freezes its objects first, so shutdown does not traverse them again
    (:mod:`alignkit.commands.startup`).
    """
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import logging

        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    from alignkit.commands.startup import freeze_for_exit

    freeze_for_exit()
    sys.exit(code)


if __name__ == "__main__":
    entry()
