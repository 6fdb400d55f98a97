"""Change points of logged series: jumps, plateaus and phase transitions, with the pieces they are built from.

- ``jumps``: where a series' level changes abruptly (``detect_jumps``, ``JumpDetector``);
- ``plateaus``: long flat stretches, usually ended by a drop (``detect_plateaus``, ``PlateauDetector``);
- ``events``: jumps of several signals at about the same step, grouped into phase transitions;
- ``noise``, ``peaks``, ``axes``: robust noise scale, peak picking, reductions of long series and log-step bins;
- ``metrics``, ``synthetic``: the scores and the ground-truth curves the detectors are benchmarked on.

Nothing is imported here, so importing one detector does not load the others; import the submodule you need.
"""
