"""Where fewshot keeps what it generates: the built-in datasets and the decoded image caches."""

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder: ``$FEWSHOT_CACHE`` if set, else ``$XDG_CACHE_HOME/fewshot`` (``~/.cache/fewshot``)."""
    if env := os.environ.get("FEWSHOT_CACHE"):
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "fewshot").resolve()


def results_root() -> Path:
    """Where runs and the MLflow store go: ``$FEWSHOT_RESULTS`` if set, else ``./results``, made absolute.

    Absolute because Ray jobs and trials run in other working directories.
    """
    return Path(os.environ.get("FEWSHOT_RESULTS", "results")).expanduser().resolve()
