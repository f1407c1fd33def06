"""Variants of a config file: `--config=configs/ilsgan.py:dataset=cub,res=64,runlocal`.

A config file declares its variants as a schema, `{name: Variant(type, default, choices)}`, and
parses its `get_config` argument once with `parse`, which returns every declared name with a
value of the declared type. Items are comma-separated `key=value`; a bare key is `key=true` (for
boolean variants only); booleans accept 1/0, true/false and yes/no in any case.
"""

import dataclasses
import os
from typing import Any

TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant of a config file."""

    type: type  # str, int or bool: the type of the parsed value
    default: Any = None  # the value when the variant is not given (None: the file decides)
    choices: tuple = ()  # the allowed values; () allows any value of `type`
    minimum: int | None = None  # int variants: the smallest allowed value; None = unbounded

    def __post_init__(self):
        if self.type not in (str, int, bool):
            raise TypeError(f"a variant's type must be str, int or bool, got {self.type}")


def _display_name(config_file: str) -> str:
    """'/any/path/configs/ilsgan.py' -> 'configs/ilsgan.py' (the name users pass to --config)."""
    path = os.path.abspath(config_file)
    return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"


def _convert(name: str, text: str | None, variant: Variant) -> Any:
    """The value of one item (`text` None for a bare key); raises ValueError (no file name)."""
    if variant.type is bool:
        if text is None:
            return True
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ValueError(f"{name}={text!r} is not a boolean (use 1/0, true/false or yes/no)")
    if text is None or not text:
        raise ValueError(f"variant {name!r} needs a value ({name}=...)")
    if variant.type is int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not an integer") from None
        if variant.minimum is not None and value < variant.minimum:
            raise ValueError(f"{name}={value} is below its minimum {variant.minimum}")
    else:
        value = text
    if variant.choices and value not in variant.choices:
        raise ValueError(f"{name}={text!r} is not one of {list(variant.choices)}")
    return value


def parse(arg: str | None, schema: dict[str, Variant], config_file: str) -> dict[str, Any]:
    """Parses `arg` ('dataset=cub,res=64,runlocal') against `schema`.

    Args:
      arg: the text after the colon of `--config=FILE:arg`; None or '' = all defaults.
      schema: the file's variants by name.
      config_file: the config file's path (`__file__`), named in the errors.

    Returns:
      {name: value} for every name of `schema`: the parsed value, or the variant's default.

    Raises:
      ValueError: naming the config file and the unknown key (with the known ones), a repeated
        key, or a value that is not of the variant's type or not among its choices.
    """
    where = _display_name(config_file)
    values = {name: variant.default for name, variant in schema.items()}
    given = set()
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, equals, text = item.partition("=")
        key = key.strip()
        if key not in schema:
            raise ValueError(f"{where}: unknown variant {key!r}; the variants are {sorted(schema)}")
        if key in given:
            raise ValueError(f"{where}: variant {key!r} given twice in {arg!r}")
        given.add(key)
        try:
            values[key] = _convert(key, text.strip() if equals else None, schema[key])
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return values
