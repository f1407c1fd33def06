"""Files through `etils.epath`, so that a local path and a URL (gs://bucket/run) work alike.

Every file the package writes into a workdir or the cache goes through here or through epath
directly; a URL is never made absolute or local. Input data sets are read by tf.data, tfds or
PIL from their own paths (see `ilsgan_jax.data`).

- `resolve(path)`: a local path made absolute, a URL checked and kept as it is.
- `prepare_workdir(path)`: `resolve`, then create the directory and write and delete a probe
  file, so a workdir the process cannot reach fails at start-up, naming the path.
- `write_bytes`, `write_json`: atomic writes (a hidden temporary file in the same directory,
  then a rename), so a reader never sees a half-written file. On object stores (GCS) the rename
  is a copy and a delete; each object still appears whole.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import uuid

from etils import epath

PathLike = epath.PathLike

# `scheme:/rest` without the second slash (`gs:/bucket`): a mistyped URL, not a local path.
_MALFORMED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
# What the libraries in use import for a scheme beyond TensorFlow's file systems: orbax lists and
# deletes checkpoints on gs:// with google-cloud-storage. {scheme: (module, pip requirement)}.
SCHEME_PACKAGES = {"gs": ("google.cloud.storage", "ilsgan_jax[gcs]")}


def is_url(path: PathLike) -> bool:
    """Whether `path` names a file system by scheme (`gs://...`), not a local path."""
    return "://" in os.fspath(path)


def resolve(path: PathLike, flag: str = "path") -> str:
    """`path` as the package stores it: a local path made absolute, a URL unchanged.

    Args:
      path: a local path or a URL `scheme://bucket/...` of a file system epath supports (gs, s3,
        az, hf; any other scheme registered with `epath.register_path_cls`).
      flag: how the error messages name the value (e.g. '--workdir').
    Raises:
      ValueError naming `flag=path`: a malformed URL (`gs:/x`, `gs://`), an unknown scheme.
    """
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{flag} is empty")
    if not is_url(path):
        if _MALFORMED_URL.match(path):
            raise ValueError(
                f"{flag}={path}: malformed URL (expected scheme://bucket/path, e.g. gs://b/run)"
            )
        return os.path.abspath(path)
    scheme, rest = path.split("://", 1)
    if not _SCHEME.match(scheme) or not rest.split("/", 1)[0]:
        raise ValueError(f"{flag}={path}: malformed URL (expected scheme://bucket/path)")
    try:
        epath.Path(path)
    except (KeyError, NotImplementedError) as error:
        raise ValueError(
            f"{flag}={path}: unsupported scheme {scheme}:// (use a local path or gs://, s3://, "
            "az://)"
        ) from error
    return path


def prepare_workdir(path: PathLike, flag: str = "--workdir") -> str:
    """Checks that this process can write to the directory `path` and returns it (`resolve`d).

    Creates the directory (and its parents), writes a small probe file and deletes it again. Run
    it before compiling anything: a URL without credentials, a bucket that does not exist or a
    read-only folder then fail at once.

    Raises:
      ValueError naming `flag=path`: malformed or unsupported (see `resolve`), a Python package
        the scheme needs is missing (`SCHEME_PACKAGES`), or `cannot write there (<reason>)`.
    """
    resolved = resolve(path, flag)
    scheme = resolved.split("://", 1)[0] if is_url(resolved) else None
    if scheme in SCHEME_PACKAGES:
        module, requirement = SCHEME_PACKAGES[scheme]
        if not _importable(module):
            raise ValueError(
                f"{flag}={resolved}: {scheme}:// needs the Python module {module} "
                f"(pip install '{requirement}')"
            )
    directory = epath.Path(resolved)
    probe = directory / f".write_probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ilsgan_jax write probe\n")
        probe.unlink()
    except Exception as error:  # noqa: BLE001 - any failure means the workdir is unusable
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ValueError(f"{flag}={resolved}: cannot write there ({reason[:500]})") from error
    return resolved


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def write_bytes(path: PathLike, data: bytes) -> epath.Path:
    """Writes `data` to `path` atomically (its directory created if needed); returns the path."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.write_bytes(data)
    temporary.replace(path)
    return path


def write_json(path: PathLike, payload: dict) -> epath.Path:
    """Writes `payload` as indented JSON with sorted keys to `path` atomically."""
    return write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())
