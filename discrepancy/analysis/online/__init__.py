"""Early warning while a run trains: silent-failure rules and streaming level-change detection over each step's
metrics row (docs/early-warning.md). Shared by the trainer (``discrepancy train``) and ``discrepancy watch``."""

from discrepancy.analysis.online.config import EarlyWarningConfig
from discrepancy.analysis.online.events import EVENTS_ARRAY, VALUES_ARRAY, Event, at_least, event_rows
from discrepancy.analysis.online.monitor import Monitor, check_names, frame_rows
from discrepancy.analysis.online.streaming import LevelChange, StreamingJumps

__all__ = ["EVENTS_ARRAY", "VALUES_ARRAY", "EarlyWarningConfig", "Event", "LevelChange", "Monitor",
           "StreamingJumps", "at_least", "check_names", "event_rows", "frame_rows"]
