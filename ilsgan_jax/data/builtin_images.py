"""Built-in pictures for the one-image setting (`data.name='single_image'`, `data.builtin_image`).

Each is a scene of the synthetic renderer (synthetic_scenes.render_multi_object_scene): K objects
of the synthetic data set's shape and texture distributions, apart from each other, over one
'noise' background (at x0.25 noise, as the quick-start synthetic data), with the exact mask of
every object, so that per-instance masks can be scored without any annotation file.

'multi_object_k{K}' shows every object once, so the objects' relative places are the same in
every crop that holds two of them. 'multi_object_k3_x4' stamps each of its 3 objects at 4
places (copies of one object at least 0.4 of the side apart), so crops show the objects in
changing combinations and relative places, as crops of a cluster of objects do: the
independence prior's assumption that instances are placed independently roughly holds there.
Its masks are per object (the union of the object's copies). 'multi_object_k3_x4_flat' is the
same picture (the same shapes, places, colours and shading) with flat objects: no stripes or
noise pattern, whose 2-4 px detail at a 32 px crop is hard for small generators to draw.
'multi_object_k3_x4_flat_sparse' is a flat picture of the same kind with half the objects'
summed area (0.15 of the image instead of 0.3; the same colours, but smaller shapes at other
places): the objects lie further apart for their size, so a crop shows more of them whole
and a provider's frame (`model.layout.frame_scale`) can be made to fit one object with less
room for a neighbour.
"""

import dataclasses

import numpy as np

from ilsgan_jax.data import synthetic_scenes


@dataclasses.dataclass(frozen=True)
class BuiltinImage:
    """num_objects: K; side: image side in pixels; seed: the renderer's seed; background_noise:
    the backgrounds' noise multiplier; total_area: the objects' summed area / image area, copies
    included; copies: places per object; copy_distance: least centre distance of two copies,
    fraction of the side."""

    num_objects: int
    side: int
    seed: int
    background_noise: float
    total_area: float
    copies: int = 1
    copy_distance: float = 0.0
    texture_pattern_scale: float = 1.0


BUILTIN_IMAGES = {
    f"multi_object_k{count}": BuiltinImage(
        num_objects=count, side=128, seed=0, background_noise=0.25, total_area=0.2
    )
    for count in (2, 3, 4)
} | {
    f"multi_object_k3_x4{suffix}": BuiltinImage(
        num_objects=3,
        side=256,
        seed=0,
        background_noise=0.25,
        total_area=total_area,
        copies=4,
        copy_distance=0.4,
        texture_pattern_scale=pattern_scale,
    )
    for suffix, pattern_scale, total_area in (
        ("", 1.0, 0.3),
        ("_flat", 0.0, 0.3),
        ("_flat_sparse", 0.0, 0.15),
    )
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
        copies=spec.copies,
        copy_distance=spec.copy_distance,
        texture_pattern_scale=spec.texture_pattern_scale,
    )
    return {"image": scene["image"], "masks": scene["masks"]}
