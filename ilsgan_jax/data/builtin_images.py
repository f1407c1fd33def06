"""Built-in pictures for the one-image setting (`data.name='single_image'`, `data.builtin_image`).

Each is a scene of the synthetic renderer (synthetic_scenes.render_multi_object_scene): K objects
of the synthetic data set's shape and texture distributions, apart from each other, over one
'noise' background (at x0.25 noise, as the quick-start synthetic data), with the exact mask of
every object, so that per-instance masks can be scored without any annotation file.
"""

import dataclasses

import numpy as np

from ilsgan_jax.data import synthetic_scenes


@dataclasses.dataclass(frozen=True)
class BuiltinImage:
    """num_objects: K; side: image side in pixels; seed: the renderer's seed; background_noise:
    the backgrounds' noise multiplier; total_area: the objects' summed area / image area."""

    num_objects: int
    side: int
    seed: int
    background_noise: float
    total_area: float


BUILTIN_IMAGES = {
    f"multi_object_k{count}": BuiltinImage(
        num_objects=count, side=128, seed=0, background_noise=0.25, total_area=0.2
    )
    for count in (2, 3, 4)
}


def render_builtin_image(name: str) -> dict[str, np.ndarray]:
    """The built-in picture `name` (a key of BUILTIN_IMAGES), rendered deterministically.

    Returns:
      'image': uint8 [S, S, 3]; 'masks': uint8 [S, S, K] in [0, 255], object k's coverage
      (`masks[..., k] >= 128` is exactly the set of pixel centres inside object k; disjoint).

    Raises:
      ValueError naming `data.builtin_image` for an unknown name.
    """
    if name not in BUILTIN_IMAGES:
        raise ValueError(
            f"data.builtin_image must be one of {sorted(BUILTIN_IMAGES)}, got {name!r}"
        )
    spec = BUILTIN_IMAGES[name]
    scene = synthetic_scenes.render_multi_object_scene(
        np.random.default_rng(spec.seed),
        spec.num_objects,
        spec.side,
        total_area=spec.total_area,
        background_noise=spec.background_noise,
    )
    return {"image": scene["image"], "masks": scene["masks"]}
