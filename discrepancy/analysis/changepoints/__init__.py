"""Change points of logged series: jumps, plateaus and phase transitions, with the pieces they are built from.

- ``jumps``: where a series' level changes abruptly (``detect_jumps``, ``JumpDetector``): a two-window line test for
  long series, ``steptest``, a permutation test with a stated level for short series and short stretches, and
  ``trendstep``, the same stretches tested for a level break on top of a trend (AR(1) or random-walk noise null);
- ``plateaus``: stalls that a sudden transition ends, and the converged tail apart (``detect_plateaus``,
  ``PlateauDetector.analyse``), by the definitions of ``truth``;
- ``events``: jumps of several signals at about the same step, grouped into phase transitions;
- ``noise``, ``peaks``, ``axes``: robust noise scale, peak picking, reductions of long series and log-step bins;
- ``metrics``, ``synthetic``, ``synthetic2``: the scores (synthetic ones and the TCPD protocol) and two unlike
  generators of ground-truth curves the detectors are benchmarked on (docs/changepoints.md).

Nothing is imported here, so importing one detector does not load the others; import the submodule you need.
"""
