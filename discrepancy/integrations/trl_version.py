"""Which trl the TRL integration runs with, checked before any trl class is used.

The integration reads GRPOTrainer's internals (`_compute_loss`, `_get_per_token_logps_and_entropies`,
`_generate_and_score_completions`, the `_logs` buffers): private methods whose signatures change between trl minor
releases. So the supported range is the minor release it is tested with, not "anything newer"; a run under another
trl would record wrong numbers silently, which is worse than refusing in one line.
"""

from __future__ import annotations

from discrepancy.errors import DiscrepancyError

#: The trl releases the integration is tested with (pyproject's ``[trl]`` extra pins the same range).
SUPPORTED_TRL = ">=1.16,<1.17"
INSTALL_HINT = "pip install 'discrepancy[trl]'"


class TRLVersionError(DiscrepancyError):
    """trl is missing or outside `SUPPORTED_TRL`."""


def check_trl_version(version: str) -> None:
    """Raise `TRLVersionError` (one line, with the fix) unless ``version`` lies in `SUPPORTED_TRL`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(str(version))
    except InvalidVersion:
        raise TRLVersionError(f"trl reports an unreadable version {version!r}; the TRL integration supports trl "
                              f"{SUPPORTED_TRL} ({INSTALL_HINT})") from None
    if parsed not in SpecifierSet(SUPPORTED_TRL):
        raise TRLVersionError(f"trl {version} is outside the range the TRL integration supports ({SUPPORTED_TRL}): "
                              f"{INSTALL_HINT} installs a supported trl")


def require_trl() -> str:
    """The installed trl's version, after checking it; `TRLVersionError` when trl is missing or unsupported."""
    try:
        import trl
    except ImportError:
        raise TRLVersionError(f"trl is not installed; the TRL integration needs trl {SUPPORTED_TRL}: "
                              f"{INSTALL_HINT}") from None
    version = str(getattr(trl, "__version__", "unknown"))
    check_trl_version(version)
    return version
