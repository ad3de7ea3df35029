"""The one exception type for mistakes a user can fix (bad config, missing or broken files).

The entry point prints these as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input, with the fix in its message."""

    every_rank = False  # all ranks of a DDP run raise it together: rank zero alone reports it


class ConfigError(UserError):
    """A config key holds a value that is not accepted."""


class DataError(UserError):
    """Data files are missing, truncated or not what they claim to be."""


class RunInterrupted(Exception):
    """A run stopped on a signal after saving its state; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, exit_code: int = 1, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.checkpoint = checkpoint
