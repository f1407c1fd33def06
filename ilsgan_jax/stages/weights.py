"""A network's saved weights (the U-Net segmenter's, the inversion encoder's): one orbax directory
(`saved_pytrees.save_pytree`), local or a URL.

Weights written before the orbax format, a single flax msgpack file (`segmenter/best.msgpack`,
`encoder/encoder.msgpack`), are still read when the orbax directory is absent, with a log line
saying so."""

import flax.serialization
from absl import logging
from etils import epath

from ilsgan_jax.train import saved_pytrees


def exist(directory: epath.PathLike, legacy_file: epath.PathLike) -> bool:
    """Whether weights are saved in `directory` (orbax) or in the old `legacy_file` (msgpack)."""
    return saved_pytrees.has_pytree(directory) or epath.Path(legacy_file).is_file()


def save(directory: epath.PathLike, variables: dict) -> str:
    """Writes `variables` (a pytree of arrays) into `directory` with orbax, atomically; every
    process calls it. Returns the directory."""
    return saved_pytrees.save_pytree(directory, variables)


def load(
    directory: epath.PathLike,
    legacy_file: epath.PathLike,
    template: dict,
    *,
    what: str,
    remedy: str,
) -> dict:
    """The weights in `directory` (orbax), else in the old msgpack `legacy_file`, shaped like
    `template` (a pytree of arrays or `jax.ShapeDtypeStruct`s); NumPy leaves.

    Args:
      what: names the network in messages ('segmenter').
      remedy: what to run to write them again ('--mode=train_segmenter').
    Raises:
      FileNotFoundError naming `directory` when neither exists; ValueError naming the directory
      or file, and `remedy`, when it cannot be read (corrupt, or a different network).
    """
    directory, legacy_file = epath.Path(directory), epath.Path(legacy_file)
    if saved_pytrees.has_pytree(directory):
        try:
            return saved_pytrees.restore_pytree(directory, template)
        except Exception as error:  # noqa: BLE001 - corrupt or mismatched: name the directory
            raise ValueError(
                f"{directory}: cannot read the {what} weights ({type(error).__name__}: {error}); "
                f"delete it and run {remedy} again"
            ) from error
    if legacy_file.is_file():
        logging.info(
            "Reading the %s weights from %s, the old msgpack format (%s writes the orbax format).",
            what,
            legacy_file,
            remedy,
        )
        try:
            loaded = flax.serialization.from_bytes(template, legacy_file.read_bytes())
            saved_pytrees.check_shapes_like(loaded, template)
            return loaded
        except Exception as error:  # noqa: BLE001 - corrupt or mismatched: name the file
            raise ValueError(
                f"{legacy_file}: cannot read the {what} weights ({type(error).__name__}: {error}); "
                f"delete it and run {remedy} again"
            ) from error
    raise FileNotFoundError(f"No {what} weights at {directory}; run {remedy} first")
