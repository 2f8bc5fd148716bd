"""Where fewshot keeps what it generates: built-in datasets and decoded caches, runs, Ray's checkpoints, MLflow."""

import os
import tempfile
from pathlib import Path

from fewshot.errors import ConfigError


def cache_root() -> Path:
    """The cache folder: ``$FEWSHOT_CACHE`` if set, else ``$XDG_CACHE_HOME/fewshot`` (``~/.cache/fewshot``)."""
    if env := os.environ.get("FEWSHOT_CACHE"):
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "fewshot").resolve()


def ray_storage(local: Path, results: Path) -> str:
    """Where Ray Train and Tune keep the checkpoints and state of what runs in ``local`` (a folder under
    ``results``): below ``$FEWSHOT_STORAGE`` when it is set — cloud storage (``s3://bucket/ray``) or a shared
    file system, which a multi-node cluster needs, since any node may restore a run — else ``local`` itself."""
    base = os.environ.get("FEWSHOT_STORAGE")
    if not base:
        return str(local)
    local = Path(local).resolve()
    try:
        relative = local.relative_to(Path(results).resolve()).as_posix()
    except ValueError:  # outside the results root: keep the last two parts, enough to tell runs apart
        relative = "/".join(local.parts[-2:])
    return f"{base.rstrip('/')}/{relative}"


def writable(folder: Path) -> bool:
    """Whether ``folder`` (made if need be) can take new files."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def check_writable(folder: Path | str, what: str) -> None:
    """A :class:`ConfigError` now, in one line, if ``folder`` could not be made and written — before any work,
    and without making it (its nearest existing parent is tried instead)."""
    folder = Path(folder).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} {folder}: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ConfigError(f"{what} {folder} cannot be written ({err.strerror} in {existing})") from None


def default_tracking_uri(results: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store ``<results>/mlflow.db``."""
    return absolute_uri(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(results) / 'mlflow.db'}")


def absolute_uri(uri: str) -> str:
    """Make a local store URI absolute (``sqlite:///mlflow.db`` -> ``sqlite:////abs/mlflow.db``)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).expanduser().resolve()}"
    if "://" not in uri:  # a bare path: a SQLite file
        return f"sqlite:///{Path(uri).expanduser().resolve()}"
    return uri
