"""Reading the versioned YAML policies (training, gate, canary, drift, serving, kubernetes) with errors that say
what to fix.

Each stage validates its own schema (pydantic); this module holds what they share: reading a file
that must be a YAML mapping, turning a ``ValidationError`` into one line per bad field, and
``load_policy_file`` (both, for one file and one model: the gate, drift, canary and serving policies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class StrictModel(BaseModel):
    """The base of every config and policy file's model: an unknown key is an error (a typo never passes
    silently as a default) and a loaded policy is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def refuse_renamed(data: Any, renamed: dict[str, str]) -> Any:
    """A ``mode="before"`` validator's body: ``data`` unchanged, or a ValueError naming each key of ``renamed``
    (old -> new) that ``data`` still uses and the key to write instead (a renamed key is never silently
    ignored, nor silently taken as the new one: the file says one thing, the verdict would say another)."""
    if isinstance(data, dict):
        old = [key for key in renamed if key in data]
        if old:
            raise ValueError(
                "; ".join(
                    f"`{key}` was renamed `{renamed[key]}`: rename it in the policy file" for key in old
                )
            )
    return data


def read_yaml_mapping(
    path: str | Path, what: str, error: type[Exception], missing_hint: str = ""
) -> dict[str, Any]:
    """The mapping in ``path``; ``error(...)`` naming ``what`` and the file when it is missing, is not
    YAML or is not a mapping. An empty file is an empty mapping (every section at its default)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise error(f"{what} not found: {path}{f' ({missing_hint})' if missing_hint else ''}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a mapping, got {type(data).__name__}")
    return data


def describe_validation_error(error: ValidationError, title: str) -> str:
    """``title`` and one indented line per invalid field: ``  field.path: message (got value)``."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        # A whole-object check has no field of its own: its message names the field, the input is everything.
        lines.append(f"  {field}: {item['msg']} (got {item.get('input')!r})" if field else f"  {item['msg']}")
    return f"{title}:\n" + "\n".join(lines)


def load_policy_file(path: str | Path, model: type[Model], what: str, error: type[Exception]) -> Model:
    """The YAML mapping at ``path`` validated as ``model``: the one way a policy file is read. ``error(...)``
    names ``what`` and the file when it is missing, is not YAML or not a mapping, and each bad field."""
    raw = read_yaml_mapping(path, what, error)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(describe_validation_error(exc, f"invalid {what} {path}")) from None


def load_model_file(
    model: type[Model], path: str | Path | None, default_path: Path, what: str, error: type[Exception]
) -> Model:
    """``path`` (which must exist), else ``default_path`` (missing: the model's defaults, e.g. an image
    without ``include/config``), validated as ``model``; errors name the file and the bad fields."""
    if path is None:
        if not default_path.exists():
            return model()
        path = default_path
    return load_policy_file(path, model, what, error)
