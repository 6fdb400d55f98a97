"""The unit of a logged series, for axis labels: read from its description first, then from its name.

Run files carry a description of every series (``RunSchema.series``) but no unit field, so the unit is inferred:
"seconds spent ..." is s, "... in tokens" is tokens, "share of ..." is a share in [0, 1]; KL and entropy are in
nats (natural logarithms throughout the trainer). An empty string means dimensionless or unknown.
"""

from __future__ import annotations

import re

_BY_DESCRIPTION = [  # (unit, regex on the description); first match wins
    ("s", r"\bseconds?\b"),
    ("per 1k tokens", r"per 1000 .*tokens"),
    ("tokens", r"in tokens|\(tokens\)|completion length|shortest completion|longest completion"),
    ("share", r"^share|^fraction|\bshare of\b|\bfraction of\b"),
]
_BY_NAME = [
    ("s", r"^time_|_time$"),
    ("tokens", r"length|^len_"),
    ("share", r"frac|^clip_ratio"),
    ("nats", r"kl|entropy"),
    ("reward", r"reward|correct|format"),
]


_DIMENSIONLESS = r"^reward_weight_|^ctl_.*_scale$"  # weights and multipliers: no unit, whatever their name says


def unit_of(name: str, description: str = "") -> str:
    """Unit of series ``name`` ('s', 'tokens', 'share', 'nats', 'reward' or '')."""
    if re.search(_DIMENSIONLESS, name):
        return ""
    for unit, pattern in _BY_DESCRIPTION:
        if re.search(pattern, description, flags=re.IGNORECASE):
            return unit
    for unit, pattern in _BY_NAME:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return unit
    return ""
