"""Atomic file writes for the stages: `ilsgan_jax.files.write_bytes` / `write_json` (a temporary
file in the same directory, then a rename, through etils.epath), so a reader (or a resumed run)
never sees a half-written report; local paths and URLs (gs://...) alike."""

from etils import epath

from ilsgan_jax import files


def write_bytes(path: epath.PathLike, data: bytes) -> str:
    """Writes `data` to `path` (its directory created if needed); returns `path`."""
    return str(files.write_bytes(path, data))


def write_json(path: epath.PathLike, payload: dict) -> None:
    """Writes `payload` as indented JSON with sorted keys to `path`."""
    files.write_json(path, payload)
