"""Reading the course's CSV files: every cell as text (ids such as ``007`` or ``NA`` stay as written), and a
missing or unreadable file as a :class:`DataError` naming it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from fewshot.errors import DataError


def read_text_csv(path: Path, blank_as_na: bool = False) -> pd.DataFrame:
    """Read ``path`` with every column as ``str``; with ``blank_as_na`` empty cells become NaN."""
    try:
        with warnings.catch_warnings():
            # A row longer than the header would lose its extra cells with only a warning: make it an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""] if blank_as_na else None, index_col=False
            )
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: a row has more cells than the header has columns") from None
    except UnicodeDecodeError as err:
        line, value = _undecodable(Path(path), err)
        raise DataError(f"{path}: line {line}: byte {value} is not UTF-8 (save the file as UTF-8)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV file ({' '.join(str(err).split())})") from None


def _undecodable(path: Path, err: UnicodeDecodeError) -> tuple[int, str]:
    """The line (1-based) of the first byte that is not UTF-8, and that byte: pandas reports a position in
    its read buffer, which a user cannot find in the file."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as first:
        return data.count(b"\n", 0, first.start) + 1, f"0x{data[first.start]:02x}"
    return 1, f"0x{err.object[err.start]:02x}"
