"""The torch CPU threads of an analysis command (``--threads``), shared by ``llc`` and ``probe``."""

from __future__ import annotations

import os

THREADS_HELP = ("Torch CPU threads (0: the cores idle when the command starts, at least 1; threads that compete "
                "with other processes for the cores slow down many times over).")


def set_threads(requested: int) -> str:
    """Set torch's CPU threads (`devices.cpu_threads`); the note to say once the work is done when other work left
    fewer than every core ("" otherwise). Said after the work, not before it: it explains the time the work took,
    and a command refused for bad input (one line) did no work to explain."""
    import torch

    from discrepancy.modeling.devices import cpu_threads

    n = cpu_threads(requested)
    torch.set_num_threads(n)
    cores = os.cpu_count() or 1
    if requested == 0 and n < cores:
        return (f"note: other processes were using the cores: ran with {n} torch thread(s) of {cores} (--threads "
                "sets it)")
    return ""
