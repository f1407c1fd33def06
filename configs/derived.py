"""Fields computed from other fields, kept up to date when a flag overrides their source.

Arithmetic derivations use FieldReference arithmetic directly
(`config.train.get_ref('batch_size') * 2`); `derived` covers the rest (a choice by a threshold or
by a string). Either way `--config.<source>=...` updates the derived field, and overriding the
derived field itself replaces the computation by the given value.
"""

from collections.abc import Callable
from typing import Any

from ml_collections import config_dict


def derived(
    compute: Callable[[Any], Any], source: config_dict.FieldReference, field_type: type
) -> config_dict.FieldReference:
    """A reference whose value is `compute(source's current value)`, of type `field_type`.

    Example: `config.optim.learning_rate = derived(lambda res: 0.0015 if res >= 128 else 0.001,
    config.data.get_ref('resolution'), float)`.
    """
    # FieldReference's own casts (`to_float`) are built the same way: an op whose first argument
    # is the unused default value and whose second is the source reference, resolved on `get()`.
    return config_dict.FieldReference(
        field_type(),
        field_type=field_type,
        op=config_dict._Op(lambda _, value: compute(value), [source]),  # noqa: SLF001
    )
