"""Stopping a run politely: SIGTERM (a scheduler ending the job) or Ctrl-C ends the run after the step in progress,
with a checkpoint at that very step, and every rank of a torchrun job stops at the same step."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


@contextmanager
def stop_requested_by_signal(notify: Callable[[str], None] | None) -> Iterator[Callable[[], int | None]]:
    """Within the block, SIGTERM (a scheduler ending the job) and a first Ctrl-C only raise a flag that the loop
    checks between steps, so the step in progress completes and the run closes "interrupted" with a checkpoint at
    that very step. A second Ctrl-C stops at once (KeyboardInterrupt: the run file still closes "interrupted").
    The yielded function returns the signal number that asked for the stop, or None.

    Written here rather than using the run file's SIGTERM-to-exception helper: an exception would abort the step
    mid-update (or be swallowed by a broad ``except`` such as the instruments' guard), leaving the resume point
    at an older checkpoint.
    """
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: object) -> None:
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not requested:
            requested.append(signum)
            if notify is not None:
                notify(f"{signal.Signals(signum).name}: stopping after the step in progress"
                       + (" (Ctrl-C again to stop now)" if signum == signal.SIGINT else ""))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: requested[0] if requested else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def all_ranks_agree(signum: int | None, model: torch.nn.Module) -> int:
    """The signal that stops the run now (0: none): this rank's, shared with every rank under torchrun, where the
    largest signal number wins. Each rank is signalled separately; one stopping a step before the others would
    leave them waiting in a gradient all-reduce forever, and each rank's exit code must tell that it was stopped."""
    agreed = signum or 0
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([float(agreed)], device=next(model.parameters()).device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # a host sync, once per step
        agreed = int(flag.item())
    return agreed
