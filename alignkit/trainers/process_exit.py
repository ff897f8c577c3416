"""A launched rank's clean exit: give the collective library's threads the GIL before Python shuts down.

torch's gloo backend runs collectives on its own threads, and a finished collective may be freed on one
of them just after the caller has moved on (a barrier keeps the collectives that were still in flight
when it was queued, so the last barrier of a run can free an all-gather's tensors). Freeing a tensor
that Python once owned needs the GIL. When the interpreter is already finalizing, CPython ends a thread
that asks for the GIL with ``pthread_exit``, which unwinds through a C++ destructor, and the whole
process aborts ("terminate called without an active exception", exit -6) after a run that finished and
saved. The stack, from a core of one such abort in a 2-process CPU run: ``~AsyncBarrierWork`` ->
``~AsyncAllgatherWork`` -> ``TensorImpl::decref_pyobject`` -> ``take_gil`` -> ``pthread_exit`` ->
``std::terminate``. About one launch in sixteen did this here, on any method.

``atexit`` handlers run before finalization, so one that releases the GIL for a moment lets those
threads finish their frees while the interpreter is still whole. (moolib settles its threads at exit
the same way, facebookresearch/moolib#53.) torch offers no call that waits for gloo's threads to go idle.
"""

from __future__ import annotations

import atexit
import gc
import time

SETTLE_SECONDS = 0.25  # a GIL hand-over takes microseconds; this covers a starved CPU's scheduling delay


def settle_collectives_at_exit() -> None:
    """Register the exit handler that lets collective threads finish their frees (once per process)."""
    atexit.unregister(_settle)  # however many trainers a process builds, the handler runs once
    atexit.register(_settle)


def _settle() -> None:
    gc.collect()  # frees what only cycles still hold, while other threads can still take the GIL
    time.sleep(SETTLE_SECONDS)  # sleeping releases the GIL: a thread waiting for it gets it now
