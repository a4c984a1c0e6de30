"""The one exception type library code raises for anything a user can cause or fix.

The CLI turns it into a single line on stderr and a non-zero exit code; anything else is a bug
and keeps its traceback.
"""


class SentimentError(Exception):
    """A user-facing error: its message is one clear line that says what to do."""

    exit_code = 1


class DataMissingError(SentimentError):
    """Data that should have been downloaded is not on disk."""

    exit_code = 2
