"""Process-level runtime settings, set in one place: compilation cache, TensorFlow visibility."""

import os

from absl import logging
from etils import epath

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "ilsgan_jax")


def cache_dir() -> str:
    """The project's cache directory (`$ILSGAN_JAX_CACHE`, local or a URL, or
    `~/.cache/ilsgan_jax`)."""
    return os.environ.get("ILSGAN_JAX_CACHE", DEFAULT_CACHE_DIR)


def setup_compilation_cache(directory: str | None = None) -> str:
    """Turns on JAX's persistent compilation cache so repeated runs (tests, demo) skip compiling.

    Returns the directory used.
    """
    import jax

    directory = str(directory or epath.Path(cache_dir()) / "jax_compilation_cache")
    epath.Path(directory).mkdir(parents=True, exist_ok=True)  # the cache may be a URL (gs://)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def hide_accelerators_from_tensorflow() -> None:
    """Keeps tf.data on the CPU so TensorFlow never grabs GPU/TPU memory that JAX needs."""
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - tensorflow is a declared dependency
        return
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError) as error:  # devices already initialised
        logging.warning("Could not hide accelerators from TensorFlow: %s", error)


class _DropChattyLibraryInfo:
    """logging filter: drops INFO records emitted from the files of very chatty libraries."""

    CHATTY = ("/orbax/", "/tensorflow_datasets/", "/etils/")

    def filter(self, record) -> bool:
        import logging as std_logging

        if record.levelno >= std_logging.WARNING:
            return True
        return not any(part in record.pathname for part in self.CHATTY)


def quiet_library_logs() -> None:
    """Keeps INFO logs of orbax / tfds (one line per file written or read) off the console;
    our own INFO lines and every warning still show."""
    import logging as std_logging

    std_logging.getLogger("absl").addFilter(_DropChattyLibraryInfo())
    for handler in std_logging.getLogger().handlers:
        handler.addFilter(_DropChattyLibraryInfo())
