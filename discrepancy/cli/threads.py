"""The torch CPU threads of an analysis command (``--threads``), shared by ``llc`` and ``probe``."""

from __future__ import annotations

import os
from collections.abc import Callable

THREADS_HELP = ("Torch CPU threads (0: the cores idle when the command starts, at least 1; threads that compete "
                "with other processes for the cores slow down many times over).")


def set_threads(requested: int, say: Callable[[str], None]) -> int:
    """Set torch's CPU threads (`devices.cpu_threads`); say so when other work leaves fewer than every core."""
    import torch

    from discrepancy.modeling.devices import cpu_threads

    n = cpu_threads(requested)
    torch.set_num_threads(n)
    cores = os.cpu_count() or 1
    if requested == 0 and n < cores:
        say(f"note: other processes are using the cores: {n} torch thread(s) instead of {cores} (--threads sets it)")
    return n
