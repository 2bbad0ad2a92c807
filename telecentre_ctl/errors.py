"""One root for every error the tool reports; each carries the exit code of the contract.

0 ok, 1 an operation failed or a service is degraded, 2 invalid input or usage (nothing
touched), 3 a host unreachable. The CLI turns these into exits in one place (cli/main.py).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (file and key path), what, and how to fix it."""

    file: str
    key: str
    message: str
    fix: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f": {self.key}"
        text = f"{where}: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class TelecentreError(Exception):
    """Root of the tool's errors. `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class InvalidInput(TelecentreError):
    """Bad input or usage; nothing was touched. May carry many problems at once."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, *, fix: str = "", problems: list[Problem] | None = None):
        super().__init__(message, fix=fix)
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        lines = [f"{self.message} ({len(self.problems)} problem(s)):"]
        lines += [f"  - {str(p).replace(chr(10), chr(10) + '  ')}" for p in self.problems]
        return "\n".join(lines)


class OperationFailed(TelecentreError):
    """An operation ran and failed, or a service is degraded."""

    exit_code = EXIT_FAILED


class HostUnreachable(TelecentreError):
    """A host could not be reached over SSH."""

    exit_code = EXIT_UNREACHABLE


class PreconditionMissing(InvalidInput):
    """The machine lacks something the command needs (root, a package); nothing touched."""
