"""Where fewshot keeps what it generates: built-in datasets and decoded caches, runs, Ray's checkpoints."""

import os
from pathlib import Path


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
