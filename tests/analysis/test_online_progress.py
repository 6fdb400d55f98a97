"""What ``watch`` says while it follows a run (analysis.online.follow.Progress): where it attached, then at most one
line per interval, only when the run moved on."""

from __future__ import annotations

from discrepancy.analysis.online.follow import Progress


def test_attach_then_at_most_one_line_per_interval_and_none_while_stalled():
    now = [0.0]
    p = Progress(every=10.0, clock=lambda: now[0])
    assert p.line("run.h5", 7).startswith("following run.h5 from step 7:")
    said = []
    for t in range(1, 61):  # a read every second for a minute, one step per read but for a stall at 30–45 s
        now[0] = float(t)
        said.append(p.line("run.h5", 7 + min(t, 30) + max(0, t - 45)))
    lines = [(t + 1, s) for t, s in enumerate(said) if s is not None]
    assert [t for t, _ in lines] == [10, 20, 30, 46, 56]  # ≥ 10 s apart; nothing new at 40 (the run stalled)
    p.events = 2
    now[0] = 70.0
    assert p.line("run.h5", 60) == "at step 60 (+12 in 14 s), 2 event(s) so far"  # step 48 at 56 s
    quiet = Progress(every=0.0, clock=lambda: now[0])
    assert quiet.line("r", 0) == "following r (no step written yet): early-warning events print as they come; " \
        "Ctrl-C stops"
    now[0] = 1e6
    assert quiet.line("r", 100) is None
