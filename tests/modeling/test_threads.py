"""CPU threads of the analysis commands: the cores idle now, measured from /proc/stat, never more than the cores."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from discrepancy.modeling.devices import busy_cores, cpu_threads


def test_threads_follow_the_idle_cores() -> None:
    cores = os.cpu_count() or 1
    assert cpu_threads(3) == 3  # asked for: given
    assert cpu_threads(busy=0.0) == cores
    assert cpu_threads(busy=float(cores)) == 1  # every core busy: one thread, never 0
    assert cpu_threads(busy=cores + 5.0) == 1
    assert cpu_threads(busy=-0.3) == cores  # rounding noise never asks for more than the cores


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="busy cores are read from /proc/stat")
def test_busy_cores_sees_a_process_that_spins() -> None:
    """Planted load: a child process that spins on one core is seen as about one more busy core."""
    quiet = busy_cores(0.3)
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        loaded = busy_cores(0.3)
    finally:
        spin.kill()
        spin.wait()
    assert quiet is not None and loaded is not None
    if quiet > (os.cpu_count() or 1) - 1:  # other work fills every core: a spinning child only takes a share
        pytest.skip(f"no idle core to plant the load on ({quiet:.1f} busy)")
    assert loaded - quiet > 0.5, (quiet, loaded)
