"""User-facing errors.

Every mistake a user can make (a bad path, a missing CSV column, an unknown config key, an episode
that asks for more classes than exist) raises a :class:`FewshotError` whose message names the file,
row, key or value at fault. Job entry points catch it and print the message alone, without a traceback.
"""


class FewshotError(Exception):
    """Base class of errors caused by user input rather than by a bug."""


class ConfigError(FewshotError):
    """A configuration file, key or value is invalid."""


class DataError(FewshotError):
    """A dataset, image, CSV or episode file is invalid or inconsistent."""


def one_line(text: str) -> str:
    """``text`` with control characters (a newline in a key) escaped, so an error message stays one line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
