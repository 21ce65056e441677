"""Every error a user can fix, in one place, and the exit code each one ends the CLI with.

Modules raise these; only the console script (`assistant/cli.py`) turns them into messages and
exit codes, so no module needs to import the CLI.
"""

from __future__ import annotations

EXIT_USAGE = 2  # bad input, bad settings, a missing artifact or model: the message says the fix
EXIT_INTERRUPTED = 130


class AssistantError(Exception):
    """Base of every user-fixable failure: printed one line per problem, exit code `exit_code`."""

    exit_code = EXIT_USAGE

    def lines(self) -> list[str]:
        return str(self).splitlines() or [self.__class__.__name__]


class UsageError(AssistantError):
    """A command-line argument or request the user must change."""


class NotBuilt(AssistantError):
    """A variant's artifacts are missing; the message names the command that builds them."""


class LockedError(AssistantError):
    """Another process holds the lock on what this one wants to write (a build, an evaluation)."""
