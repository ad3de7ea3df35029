"""The one exception type for mistakes a user can fix (bad config, missing or broken files).

The entry point prints these as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input, with the fix in its message."""


class ConfigError(UserError):
    """A config key holds a value that is not accepted."""


class DataError(UserError):
    """Data files are missing, truncated or not what they claim to be."""
