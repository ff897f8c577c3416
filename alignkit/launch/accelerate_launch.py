"""``accelerate launch`` as ``alignkit train --accelerate_config`` runs it: a failed launch ends in one line.

A rank that meets a user's mistake prints its own ``error: ...`` line and exits 2. accelerate then
re-raises torch's ``ChildFailedError`` (or, for a single process, ``CalledProcessError``) from the
launcher, and its traceback (of the launcher, not of the run) buried that line. Here the launch is
accelerate's own (parser and launchers, unchanged); only that final exception becomes an exit code:
2, silently, when the first process to fail reported a user error itself, else one line naming the
rank and its exit code or signal (the processes' output above has the cause).
"""

from __future__ import annotations

import signal
import subprocess
import sys


def _how(code: int) -> str:
    if code < 0 and -code in signal.valid_signals():
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def main() -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args()
    try:
        launch_command(args)
    except (ChildFailedError, subprocess.CalledProcessError) as err:
        if isinstance(err, ChildFailedError):
            rank, failure = err.get_first_failure()
            code = failure.exitcode
        else:
            rank, code = 0, err.returncode
        if code == 2:  # that process already printed its one-line `error:` (alignkit.cli)
            return 2
        print(
            f"error: the launch failed: rank {rank} ended with {_how(code)}; its output above says why.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
