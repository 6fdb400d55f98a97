"""Errors of the run file: each names the file, says what is wrong and how to recover."""

from __future__ import annotations

from pathlib import Path

from discrepancy.errors import DiscrepancyError


class RunFileError(DiscrepancyError):
    """A run file cannot be opened or read as asked."""

    exit_code = 3

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class RunNotFound(RunFileError):
    """The path does not exist, or is a directory."""


class NotARunFile(RunFileError):
    """The file is not HDF5, or is HDF5 but not a discrepancy run."""


class RunTruncated(RunFileError):
    """The file ends early (a writer killed before its first flush, or a partial copy)."""

    def __init__(self, path: str | Path, problem: str, last_step: int | None = None) -> None:
        self.last_step = last_step
        super().__init__(path, problem)


class RunCorrupted(RunFileError):
    """The file's bytes are damaged, or reading it did not finish in time."""


class SchemaError(RunFileError):
    """The run's schema version is unknown or the layout lacks something the format requires."""


class RunWriteError(RunFileError):
    """Writing the run file failed (a full disk, a quota, a file size limit): the recorder stopped writing, and the
    file keeps every step of its last complete flush (``safe_steps`` rows, up to ``last_safe_step``)."""

    def __init__(self, path: str | Path, problem: str, safe_steps: int = 0, last_safe_step: int | None = None) -> None:
        self.safe_steps = safe_steps
        self.last_safe_step = last_safe_step
        super().__init__(path, problem)


def describe_read_error(exc: BaseException) -> str:
    """HDF5's reason a read failed, in the reader's words (first line of the library's message otherwise)."""
    text = str(exc)
    if "filter returned failure" in text or "checksum" in text:
        return "its checksum does not match the stored bytes"
    if "addr overflow" in text:
        return "it points past the end of the file"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]
