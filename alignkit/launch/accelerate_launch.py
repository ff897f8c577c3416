"""``accelerate launch`` as ``alignkit train --accelerate_config`` runs it: a failed launch ends in one line.

A rank that meets a user's mistake prints its own ``error: ...`` line and exits 2. accelerate then
re-raises torch's ``ChildFailedError`` from the launcher, and its traceback (of the launcher, not of
the run) buried that line. Here the launch is accelerate's own (parser and launcher, unchanged); only
that final exception becomes an exit code: 2, silently, when the first rank to fail reported a user
error itself, else one line naming the rank and its exit code or signal (the ranks' output above
has the cause).
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args()
    try:
        launch_command(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if failure.exitcode == 2:  # that rank already printed its one-line `error:` (alignkit.cli)
            return 2
        how = f"exit code {failure.exitcode}"
        if failure.exitcode < 0 and -failure.exitcode in signal.valid_signals():
            how = f"signal {signal.Signals(-failure.exitcode).name}"
        print(
            f"error: the launch failed: rank {rank} ended with {how}; its output above says why.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
