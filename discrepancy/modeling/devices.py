"""The device policy: every choice this project makes by device type, in one place, with the measurement behind it.

Each function answers one question about a device; modules ask these instead of testing ``device.type`` themselves,
so a new device type (or a new measurement) changes one line here. What a device *can* do (CUDA graphs exist only on
CUDA) is not policy and stays where it is used.
"""

from __future__ import annotations

import os
import time

import torch


def _type(device: torch.device | str) -> str:
    return torch.device(device).type


def prompt_sharing_pays(device: torch.device | str) -> bool:
    """Whether forwards should encode each prompt once per group of G completions (a KV cache over the prompts).

    CPU only: there a forward costs in proportion to its tokens, and sharing halves the tiny recipe's. On a GPU a small
    model's forward is bound by kernel launches, and sharing doubles the calls: on an H100 the GPU benchmark's training
    forward + backward took 0.55 s shared against 0.25 s plain, and the post-step measurement 0.73 s against 0.07 s
    (``benchmarks/results/profile_step.md``).
    """
    return _type(device) == "cpu"


def host_syncs_are_cheap(device: torch.device | str) -> bool:
    """Whether code may read a value back to Python every token (a check that every row has finished, a finite-logits
    check, an inverse-CDF draw). On the CPU this costs nothing; on an accelerator each read waits for the device, so
    sampling checks every 16 tokens and draws by the exponential race instead (``benchmarks/results/sampling_cpu.md``).
    """
    return _type(device) == "cpu"


def own_decode_loop_pays(device: torch.device | str) -> bool:
    """Whether uncompiled sampling should run our token loop (`rollout.loop`) rather than transformers' `generate`.

    CPU: yes, `generate`'s per-token Python around a small model's forward is most of its time there
    (``benchmarks/results/sampling_cpu.md``). Elsewhere `generate` stays the default until the GPU benchmark's
    ``ours_loop`` side has measured the loop on a GPU.
    """
    return _type(device) == "cpu"


def compiling_pays(device: torch.device | str) -> bool:
    """Whether ``torch.compile`` of the decode step and the training layers pays for itself: CUDA only (on the CPU the
    compile costs more than it saves on the models this project trains)."""
    return _type(device) == "cuda"


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The training dtype of ``model.dtype = "auto"``: bfloat16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if _type(device) == "cuda" else torch.float32


def freed_memory_tuning_pays(device: torch.device | str) -> bool:
    """Whether a run on this device gains from keeping freed memory in the process (`trainers.allocator`): CPU only,
    where every activation tensor is process memory."""
    return _type(device) == "cpu"


def busy_cores(sample_s: float = 0.2) -> float | None:
    """Cores busy right now, from two reads of /proc/stat ``sample_s`` apart (None where there is no /proc/stat).

    Read at a command's start, before it computes, it is the other processes' load. The 1-minute load average is no
    use here: it still counts a training that ended seconds ago.
    """
    def ticks() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]  # user nice system idle iowait irq softirq steal ...
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    try:
        total0, idle0 = ticks()
        time.sleep(sample_s)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return None
    spent = total1 - total0
    if spent <= 0:
        return None
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / spent)


def cpu_threads(requested: int = 0, busy: float | None = None) -> int:
    """Torch CPU threads for an analysis command: ``requested`` when > 0, else the cores idle now (at least 1).

    Torch's OpenMP threads spin while they wait for each other, so threads that compete with other processes for the
    cores slow down many times over: `discrepancy llc` on the demo run took 40 s with 2 threads on an idle 2-core
    machine, 62 s with 1; while two other processes kept both cores busy, 2 threads did half the snapshots in 150 s
    and 1 thread all of them in 100 s.
    ``busy``: the busy cores (default: measured, `busy_cores`); without a measurement, every core.
    """
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    busy = busy_cores() if busy is None else busy
    if busy is None:
        return cores
    return max(1, min(cores, int(round(cores - busy))))
