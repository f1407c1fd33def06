"""Atomic file writes: a temporary file in the same directory, then `os.replace`, so a reader
(or a resumed run) never sees a half-written report or weights file."""

import json
import os


def write_bytes(path: str, data: bytes) -> str:
    """Writes `data` to `path` (its directory created if needed); returns `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
    return path


def write_json(path: str, payload: dict) -> None:
    """Writes `payload` as indented JSON with sorted keys to `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as file:
        json.dump(payload, file, indent=2, sort_keys=True)
    os.replace(tmp, path)
