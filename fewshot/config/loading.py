"""One way into a config: a YAML file, then ``key.sub=value`` overrides, validated as one of the typed configs.

Every mistake is a :class:`~fewshot.errors.ConfigError` of one line naming the file and key, with the closest
known key for a typo.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fewshot.errors import ConfigError, one_line

M = TypeVar("M", bound=BaseModel)


def load_config(model: type[M], path: Path | str | None = None, overrides: Sequence[str] = ()) -> M:
    """Build a ``model`` from an optional YAML file, then apply ``key.sub=value`` overrides in order."""
    data = read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        keys, value = parse_override(override)
        set_nested(data, keys, value, override)
    return validate_config(model, data, str(path) if path is not None else "")


def validate_config(model: type[M], data: dict[str, Any], source: str = "", tags: Iterable[str] = ()) -> M:
    """Validate plain ``data`` (e.g. a config stored in a checkpoint) as a ``model``; ``source`` prefixes errors.
    ``tags`` are the discriminator values of tagged unions, left out of the keys errors name."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        prefix = f"{source}: " if source else ""
        raise ConfigError(prefix + "; ".join(describe(model, e, set(tags)) for e in err.errors())) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> ``(["train", "lr"], 0.001)``.

    The value is typed as YAML types it (numbers, booleans, ``null``, ``[lists]``, ``{maps}``) unless YAML
    would read less than the whole text: a ``#`` (a comment to YAML) or a ``: `` (a mapping) in a plain value
    keeps the text whole, as a string, so ``output_dir=/runs/run #2`` names that folder.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # an unparsable value stays a string; validation decides whether that is fine
    cut_comment = "#" in raw and (value is None or isinstance(value, str))
    if cut_comment or (isinstance(value, dict) and not _braced(raw)):
        value = raw.strip()
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)  # YAML 1.1 reads "1e-3" as a string
    return key.strip().split("."), value


def _braced(raw: str) -> bool:
    text = raw.strip()
    return text.startswith("{") and text.endswith("}")


def config_dict(config: BaseModel) -> dict[str, Any]:
    """A config as plain YAML/JSON-able data (paths become strings)."""
    return config.model_dump(mode="json")


def config_hash(config: BaseModel, length: int = 12) -> str:
    """A config's identity: the hash of its resolved values (equal configs, however written, hash alike)."""
    text = json.dumps(config_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def to_yaml(config: BaseModel) -> str:
    """A config as YAML that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(config_dict(config), sort_keys=False)


def flatten(config: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}``: a config (or its dict) as dotted keys, e.g. for MLflow params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            out[prefix] = value

    walk("", config_dict(config) if isinstance(config, BaseModel) else config)
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file or bad YAML is a :class:`ConfigError` naming it."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # one line, whatever YAML said
        raise ConfigError(f"{path}:{where} is not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {type(data).__name__}")
    return data


def set_nested(data: dict[str, Any], keys: list[str], value: Any, override: str) -> None:
    """``data[k1][k2]... = value``; ``override`` names the setting in errors."""
    for key in keys[:-1]:
        node = data.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {key!r} is a value, not a section")
        data = node
    data[keys[-1]] = value


def describe(model: type[BaseModel], error: Any, tags: set[str] = set()) -> str:  # noqa: B006 (read only)
    """One pydantic error as a line a user can act on: the dotted key, what is wrong, what was given."""
    loc = [part for part in error["loc"] if part not in tags]
    key = one_line(".".join(str(part) for part in loc))
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _keys_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key {key!r}{hint}"
    if kind == "union_tag_invalid":
        ctx = error["ctx"]
        name = ctx["discriminator"].strip("'")
        return f"{key}: {name} must be one of {ctx['expected_tags']} (got {ctx['tag']!r})"
    if kind == "union_tag_not_found":
        return f"{key}: needs a {error['ctx']['discriminator'].strip(chr(39))} ({', '.join(sorted(tags))})"
    if kind == "value_error":
        return f"{key}: {error['msg'].removeprefix('Value error, ')}"
    return f"{key}: {error['msg']} (got {error['input']!r})"


def _keys_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
