"""Tests of the synthetic objects renderer (both background types, multi-object scenes) and its
tfds builder."""

import numpy as np
import pytest
import synthetic_reference
import tensorflow_datasets as tfds

from ilsgan_jax.data import config as config_lib
from ilsgan_jax.data import sources, synthetic_builder, synthetic_render, synthetic_scenes


def _render(seed: int, count: int, resolution: int) -> dict[str, np.ndarray]:
    return synthetic_render.render_synthetic_objects(
        np.random.default_rng(seed), count, resolution, return_layers=True
    )


@pytest.fixture(scope="module")
def batch32():
    return _render(seed=7, count=256, resolution=32)


def test_shapes_dtypes_and_ranges(batch32):
    assert batch32["image"].shape == (256, 32, 32, 3) and batch32["image"].dtype == np.uint8
    assert batch32["mask"].shape == (256, 32, 32, 1) and batch32["mask"].dtype == np.uint8
    for layer in ("background", "foreground", "coverage"):
        assert batch32[layer].min() >= 0.0 and batch32[layer].max() <= 1.0


def test_image_is_the_composite_of_the_layers_under_the_mask(batch32):
    """Controlled render: the image is the foreground where the mask is 1, else the background."""
    image = batch32["image"].astype(np.float64)
    mask = batch32["mask"][..., 0]
    inside, outside = mask == 255, mask == 0
    expected_fg = np.rint(batch32["foreground"].astype(np.float64) * 255.0)
    expected_bg = np.rint(batch32["background"].astype(np.float64) * 255.0)
    np.testing.assert_allclose(image[inside], expected_fg[inside], atol=1.0)
    np.testing.assert_allclose(image[outside], expected_bg[outside], atol=1.0)
    # Foreground pixels differ from the background behind them (mean over RGB in [0, 1]).
    difference = np.abs(batch32["foreground"] - batch32["background"]).mean(-1)
    per_image = np.array([difference[i][inside[i]].mean() for i in range(len(mask))])
    assert np.median(per_image) > 0.15
    assert np.mean(per_image > 0.05) > 0.95


def test_mask_threshold_matches_coverage_and_edges_are_antialiased(batch32):
    coverage, mask = batch32["coverage"], batch32["mask"][..., 0]
    np.testing.assert_array_equal(mask >= 128, coverage > 0.5)
    np.testing.assert_allclose(mask / 255.0, coverage, atol=0.5 / 255 + 1e-6)
    fractional = (coverage > 0.02) & (coverage < 0.98)
    # Edge pixels only: each image has some, and far fewer than its object pixels.
    per_image = fractional.sum(axis=(1, 2))
    assert per_image.min() > 0
    assert np.all(per_image < 0.5 * (coverage > 0.5).sum(axis=(1, 2)))


def test_coverage_matches_16x_supersampled_render():
    """Analytic coverage at R equals (approximately) the box-filtered hard mask at 16R."""
    coarse = _render(seed=3, count=24, resolution=16)
    fine = _render(seed=3, count=24, resolution=256)
    hard = (fine["coverage"] > 0.5).astype(np.float64)
    supersampled = hard.reshape(24, 16, 16, 16, 16).mean(axis=(2, 4))
    error = np.abs(supersampled - coarse["coverage"])
    assert error.mean() < 0.01
    assert np.percentile(error, 99) < 0.25
    agreement = (supersampled > 0.5) == (coarse["coverage"] > 0.5)
    assert agreement.mean() > 0.99


def test_object_sizes_and_shape_variety(batch32):
    fractions = (batch32["mask"][..., 0] >= 128).mean(axis=(1, 2))
    assert fractions.min() >= synthetic_render.MIN_AREA_FRACTION - 0.04
    assert fractions.max() <= synthetic_render.MAX_AREA_FRACTION + 0.04
    # Spread over the range, not concentrated.
    assert np.percentile(fractions, 10) < 0.17 and np.percentile(fractions, 90) > 0.33
    drawn = batch32["area_fraction"]
    np.testing.assert_allclose(fractions, drawn, atol=0.04)
    counts = np.bincount(batch32["shape_id"], minlength=len(synthetic_render.SHAPE_TYPES))
    assert counts.min() >= 30


def test_object_and_background_are_statistically_independent():
    layers = _render(seed=11, count=1500, resolution=16)
    inside = layers["mask"][..., 0] >= 128
    weights = inside[..., None].astype(np.float64)
    denom = weights.sum(axis=(1, 2))
    fg_colour = (layers["foreground"] * weights).sum(axis=(1, 2)) / denom
    bg_colour = layers["background"].mean(axis=(1, 2))
    for channel in range(3):
        correlation = np.corrcoef(fg_colour[:, channel], bg_colour[:, channel])[0, 1]
        assert abs(correlation) < 0.12
    # Object position independent of the background's mean brightness.
    rows = np.arange(16)[None, :, None]
    centre_row = (inside * rows).sum(axis=(1, 2)) / inside.sum(axis=(1, 2))
    assert abs(np.corrcoef(centre_row, bg_colour.mean(-1))[0, 1]) < 0.12


def test_positions_cover_the_image():
    layers = _render(seed=5, count=400, resolution=32)
    inside = layers["mask"][..., 0] >= 128
    columns = np.arange(32)[None, None, :]
    centre_col = (inside * columns).sum(axis=(1, 2)) / inside.sum(axis=(1, 2))
    assert centre_col.min() < 12 and centre_col.max() > 20
    assert np.std(centre_col) > 2.0


@pytest.mark.parametrize(
    "seed, count, resolution, noise",
    [(0, 16, 16, 1.0), (1, 24, 32, 1.0), (2, 8, 64, 0.25), (3, 3, 128, 0.0)],
)
def test_default_rendering_matches_the_frozen_reference(seed, count, resolution, noise):
    """The default ('noise') data are bit for bit those of the renderer before its long functions
    were split (tests/synthetic_reference.py), layers and shape draws included."""

    def render(module):
        return module.render_synthetic_objects(
            np.random.default_rng(seed),
            count,
            resolution,
            return_layers=True,
            background_noise=noise,
        )

    rendered, reference = render(synthetic_render), render(synthetic_reference)
    assert sorted(rendered) == sorted(reference)
    for key, expected in reference.items():
        np.testing.assert_array_equal(rendered[key], expected, err_msg=key)
        assert rendered[key].dtype == expected.dtype, key


def test_deterministic_from_seed():
    first = synthetic_render.render_synthetic_objects(np.random.default_rng(42), 8, 32)
    again = synthetic_render.render_synthetic_objects(np.random.default_rng(42), 8, 32)
    other = synthetic_render.render_synthetic_objects(np.random.default_rng(43), 8, 32)
    for key in ("image", "mask"):
        np.testing.assert_array_equal(first[key], again[key])
    assert np.mean(first["image"] != other["image"]) > 0.5


def test_background_noise_scales_only_the_background_noise():
    def render(noise):
        return synthetic_render.render_synthetic_objects(
            np.random.default_rng(5), 16, 32, return_layers=True, background_noise=noise
        )

    smooth, full, half = render(0.0), render(1.0), render(0.5)
    # Objects, masks and the smooth part of the background do not depend on the noise level.
    for key in ("foreground", "coverage", "mask"):
        np.testing.assert_array_equal(smooth[key], full[key])

    # Without noise the background is a linear ramp between two colours: its Laplacian vanishes
    # away from the ramp's clipped ends, while the x1 backgrounds are rough.
    def roughness(background):
        laplacian = (
            background[:, 2:, 1:-1]
            + background[:, :-2, 1:-1]
            + background[:, 1:-1, 2:]
            + background[:, 1:-1, :-2]
            - 4 * background[:, 1:-1, 1:-1]
        )
        return np.median(np.abs(laplacian))

    assert roughness(smooth["background"]) < 1e-5
    assert roughness(full["background"]) > 0.01
    # The noise enters linearly: x0.5 lies halfway wherever no channel is clipped.
    inside = np.all((full["background"] > 0) & (full["background"] < 1), axis=-1) & np.all(
        (smooth["background"] > 0) & (smooth["background"] < 1), axis=-1
    )
    assert inside.mean() > 0.5
    midway = 0.5 * (smooth["background"] + full["background"])
    np.testing.assert_allclose(half["background"][inside], midway[inside], atol=1e-5)


def test_background_noise_level_names_its_own_builder_config():
    default = synthetic_builder.make_builder_config(32, 10, 5, 0)
    quiet = synthetic_builder.make_builder_config(32, 10, 5, 0, background_noise=0.5)
    assert default.name == "r32_train10_test5_seed0"
    assert quiet.name == "r32_train10_test5_seed0_noise0.5"
    assert quiet.background_noise == 0.5
    chunk = synthetic_builder.render_split_chunk(quiet, "train", 0)
    expected = synthetic_render.render_synthetic_objects(
        np.random.default_rng([0, 0, 0]), 10, 32, background_noise=0.5
    )
    np.testing.assert_array_equal(chunk["image"], expected["image"])
    assert not np.array_equal(
        chunk["image"], synthetic_builder.render_split_chunk(default, "train", 0)["image"]
    )
    with pytest.raises(ValueError, match="synthetic_background_noise"):
        synthetic_builder.make_builder_config(32, 10, 5, 0, background_noise=-1.0)
    with pytest.raises(ValueError, match="background_noise"):
        synthetic_render.render_synthetic_objects(
            np.random.default_rng(0), 2, 16, background_noise=float("nan")
        )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_images"):
        synthetic_render.render_synthetic_objects(np.random.default_rng(0), 0, 32)
    with pytest.raises(ValueError, match="resolution"):
        synthetic_builder.make_builder_config(48, 10, 10, 0)
    with pytest.raises(ValueError, match="synthetic_test_size"):
        synthetic_builder.make_builder_config(32, 10, 0, 0)


def _prepare(data_dir, resolution=16, train=300, test=20, seed=1):
    config = synthetic_builder.make_builder_config(resolution, train, test, seed)
    builder = synthetic_builder.SyntheticObjects(config=config, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def _as_sorted_arrays(builder, split):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    order = sorted(range(len(examples)), key=lambda i: examples[i]["image"].tobytes())
    return (
        np.stack([examples[i]["image"] for i in order]),
        np.stack([examples[i]["mask"] for i in order]),
    )


def test_builder_prepares_offline_the_rendered_examples(tmp_path):
    builder = _prepare(tmp_path / "a")
    assert builder.info.splits["train"].num_examples == 300
    assert builder.info.splits["test"].num_examples == 20
    features = builder.info.features
    assert features["image"].shape == (16, 16, 3) and features["image"].dtype == np.uint8
    assert features["mask"].shape == (16, 16, 1) and features["mask"].dtype == np.uint8
    images, masks = _as_sorted_arrays(builder, "train")
    # The stored examples are exactly the rendered chunks (order aside); 300 spans two chunks.
    chunks = [
        synthetic_builder.render_split_chunk(builder.builder_config, "train", i) for i in range(2)
    ]
    rendered_images = np.concatenate([c["image"] for c in chunks])
    rendered_masks = np.concatenate([c["mask"] for c in chunks])
    order = sorted(range(300), key=lambda i: rendered_images[i].tobytes())
    np.testing.assert_array_equal(images, rendered_images[order])
    np.testing.assert_array_equal(masks, rendered_masks[order])
    # The test split is drawn from its own stream.
    test_images, _ = _as_sorted_arrays(builder, "test")
    assert not any((test_images[0] == image).all() for image in images)
    # A second build elsewhere is identical (deterministic from the seed).
    images_again, masks_again = _as_sorted_arrays(_prepare(tmp_path / "b"), "train")
    np.testing.assert_array_equal(images, images_again)
    np.testing.assert_array_equal(masks, masks_again)
    images_other_seed, _ = _as_sorted_arrays(_prepare(tmp_path / "c", seed=2), "train")
    assert not np.array_equal(images, images_other_seed)


# ---------------------------------------------------------------------------- structured


def _render_both(seed: int, count: int, resolution: int, noise: float = 1.0):
    return [
        synthetic_render.render_synthetic_objects(
            np.random.default_rng(seed),
            count,
            resolution,
            return_layers=True,
            background_noise=noise,
            background_type=background_type,
        )
        for background_type in ("noise", "structured")
    ]


@pytest.fixture(scope="module")
def both32():
    return _render_both(seed=7, count=256, resolution=32)


def _most_common_colour_fraction(image: np.ndarray, outside: np.ndarray) -> float:
    """Share of the image taken by the most frequent exact colour among `outside` pixels."""
    pixels = image[outside].astype(np.int64)
    codes = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    return np.unique(codes, return_counts=True)[1].max() / outside.size


def _saturation(rgb: np.ndarray) -> np.ndarray:
    brightest = rgb.max(-1)
    return (brightest - rgb.min(-1)) / np.maximum(brightest, 1e-6)


def test_structured_backgrounds_keep_the_objects_and_their_exact_masks(both32):
    noise, structured = both32
    for key in ("foreground", "coverage", "mask", "shape_id", "area_fraction"):
        np.testing.assert_array_equal(structured[key], noise[key], err_msg=key)
    # The structures are painted over the 'noise' background and nowhere else.
    untouched = structured["structure_coverage"] == 0.0
    np.testing.assert_array_equal(
        structured["background"][untouched], noise["background"][untouched]
    )
    # The image is the object under the mask and the structured background elsewhere: the mask
    # marks the object's pixels only, none of the structures.
    image = structured["image"].astype(np.float64)
    mask = structured["mask"][..., 0]
    inside, outside = mask == 255, mask == 0
    np.testing.assert_allclose(
        image[inside], np.rint(structured["foreground"][inside] * 255.0), atol=1.0
    )
    np.testing.assert_allclose(
        image[outside], np.rint(structured["background"][outside] * 255.0), atol=1.0
    )
    np.testing.assert_array_equal(mask >= 128, structured["coverage"] > 0.5)


def test_structured_backgrounds_have_large_flat_regions(both32):
    """Most images have a flat-coloured region of a fifth of the image; the noise type none."""
    fractions = {}
    for name, batch in zip(("noise", "structured"), both32, strict=True):
        outside = batch["mask"][..., 0] == 0
        fractions[name] = np.array(
            [_most_common_colour_fraction(batch["image"][i], outside[i]) for i in range(256)]
        )
    assert fractions["noise"].max() < 0.02
    assert np.median(fractions["structured"]) > 0.2
    assert np.percentile(fractions["structured"], 10) > 0.1
    # The structures take a large part of every image.
    covered = both32[1]["structure_coverage"].mean(axis=(1, 2))
    assert np.percentile(covered, 1) > 0.3 and np.median(covered) > 0.55


def test_structured_backgrounds_have_sharp_edges():
    """Without noise the 'noise' backgrounds are smooth ramps (no pixel-to-pixel jump above 0.1);
    every structured background has at least R such jumps (an edge across the image)."""
    resolution = 32
    for name, batch in zip(
        ("noise", "structured"), _render_both(3, 128, resolution, noise=0.0), strict=True
    ):
        background = batch["background"]
        jumps = (np.abs(np.diff(background, axis=1)).max(-1) > 0.1).sum(axis=(1, 2))
        jumps += (np.abs(np.diff(background, axis=2)).max(-1) > 0.1).sum(axis=(1, 2))
        if name == "noise":
            assert jumps.max() == 0
        else:
            assert jumps.min() >= resolution and np.median(jumps) > 4 * resolution


def test_structures_have_object_colours(both32):
    noise, structured = both32
    object_saturation = _saturation(structured["foreground"])[structured["coverage"] > 0.5].mean()
    solid = structured["structure_coverage"] > 0.99
    structure_saturation = _saturation(structured["background"])[solid].mean()
    assert abs(structure_saturation - object_saturation) < 0.1
    assert _saturation(noise["background"]).mean() < object_saturation - 0.3
    # Still independent of the object: structure colour vs object colour, per image.
    weights = (structured["coverage"] > 0.5)[..., None]
    object_colour = (structured["foreground"] * weights).sum((1, 2)) / weights.sum((1, 2))
    structure_colour = (structured["background"] * solid[..., None]).sum((1, 2)) / np.maximum(
        solid.sum((1, 2)), 1
    )[:, None]
    for channel in range(3):
        correlation = np.corrcoef(object_colour[:, channel], structure_colour[:, channel])[0, 1]
        assert abs(correlation) < 0.2


def test_structured_backgrounds_are_deterministic_from_the_seed():
    def render(seed):
        return synthetic_render.render_synthetic_objects(
            np.random.default_rng(seed), 6, 32, background_type="structured"
        )["image"]

    np.testing.assert_array_equal(render(1), render(1))
    assert np.mean(render(1) != render(2)) > 0.5


def test_structured_background_names_its_own_builder_config():
    structured = synthetic_builder.make_builder_config(
        32, 10, 5, 0, background_noise=0.25, background_type="structured"
    )
    assert structured.name == "r32_train10_test5_seed0_noise0.25_structured"
    assert synthetic_builder.make_builder_config(32, 10, 5, 0).description.endswith("x1")
    chunk = synthetic_builder.render_split_chunk(structured, "test", 0)
    expected = synthetic_render.render_synthetic_objects(
        np.random.default_rng([0, 1, 0]),
        5,
        32,
        background_noise=0.25,
        background_type="structured",
    )
    for key in ("image", "mask"):
        np.testing.assert_array_equal(chunk[key], expected[key])
    data_config = config_lib.default_data_config()
    assert data_config.synthetic_background == "noise"
    data_config.synthetic_background = "structured"
    assert sources.synthetic_builder_of(data_config).builder_config.name.endswith("_structured")
    with pytest.raises(ValueError, match="data.synthetic_background must be one of"):
        synthetic_builder.make_builder_config(32, 10, 5, 0, background_type="stripes")
    with pytest.raises(ValueError, match="background_type"):
        synthetic_render.render_synthetic_objects(
            np.random.default_rng(0), 2, 16, background_type="stripes"
        )


def test_builder_prepares_the_structured_variant(tmp_path):
    config = synthetic_builder.make_builder_config(16, 40, 8, 3, background_type="structured")
    builder = synthetic_builder.SyntheticObjects(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 40
    images, masks = _as_sorted_arrays(builder, "train")
    chunk = synthetic_builder.render_split_chunk(config, "train", 0)
    order = sorted(range(40), key=lambda i: chunk["image"][i].tobytes())
    np.testing.assert_array_equal(images, chunk["image"][order])
    np.testing.assert_array_equal(masks, chunk["mask"][order])


# ---------------------------------------------------------------------------- scenes


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_multi_object_scene_masks_are_exact_and_disjoint(count):
    resolution = 64
    scene = synthetic_scenes.render_multi_object_scene(
        np.random.default_rng(count), count, resolution, return_layers=True
    )
    image, masks, coverage = scene["image"], scene["masks"], scene["coverage"]
    assert image.shape == (resolution, resolution, 3) and image.dtype == np.uint8
    assert masks.shape == (resolution, resolution, count) and masks.dtype == np.uint8
    binary = masks >= 128
    np.testing.assert_array_equal(binary, np.moveaxis(coverage > 0.5, 0, -1))
    # Apart: no pixel, edge pixels included, is touched by two objects.
    assert (masks > 0).sum(-1).max() <= 1
    # Every object is there, about its drawn size (total_area / K x 0.8..1.2, whole objects).
    areas = binary.mean(axis=(0, 1))
    assert np.all(areas > 0.2 / count * 0.8 - 0.02) and np.all(areas < 0.2 / count * 1.2 + 0.02)
    # The image is object k under mask k and the background where no mask is.
    for k in range(count):
        solid = masks[..., k] == 255
        np.testing.assert_allclose(
            image[solid], np.rint(scene["foreground"][k][solid] * 255.0), atol=1.0
        )
    empty = masks.max(-1) == 0
    np.testing.assert_allclose(image[empty], np.rint(scene["background"][empty] * 255.0), atol=1.0)


def test_multi_object_scene_is_deterministic_and_checks_its_arguments():
    first = synthetic_scenes.render_multi_object_scene(np.random.default_rng(5), 3, 32)
    again = synthetic_scenes.render_multi_object_scene(np.random.default_rng(5), 3, 32)
    for key in ("image", "masks"):
        np.testing.assert_array_equal(first[key], again[key])
    with pytest.raises(ValueError, match="total_area"):
        synthetic_scenes.render_multi_object_scene(np.random.default_rng(0), 2, 32, total_area=0.9)
    with pytest.raises(ValueError, match="num_objects"):
        synthetic_scenes.render_multi_object_scene(np.random.default_rng(0), 0, 32)


def test_flat_scene_objects_are_shaded_colours_with_the_same_shapes():
    """texture_pattern_scale=0 leaves each object its base colour times a linear shading ramp:
    every layer is affine in the pixel coordinates wherever it is not clipped, while the
    textured scene's layers are not; shapes, places and masks do not change."""

    def render(scale):
        return synthetic_scenes.render_multi_object_scene(
            np.random.default_rng(4),
            3,
            64,
            copies=2,
            texture_pattern_scale=scale,
            return_layers=True,
        )

    flat, textured = render(0.0), render(1.0)
    np.testing.assert_array_equal(flat["masks"], textured["masks"])
    np.testing.assert_array_equal(flat["coverage"], textured["coverage"])

    def curvature(layers):  # the largest second difference along either axis, unclipped only
        inside = (layers > 1e-4) & (layers < 1.0 - 1e-4)
        rows = np.abs(np.diff(layers, 2, axis=1))[inside[:, 1:-1] & inside[:, 2:] & inside[:, :-2]]
        cols = np.abs(np.diff(layers, 2, axis=2))[
            inside[:, :, 1:-1] & inside[:, :, 2:] & inside[:, :, :-2]
        ]
        return max(rows.max(), cols.max())

    assert curvature(flat["foreground"]) < 1e-4
    assert curvature(textured["foreground"]) > 1e-2
    with pytest.raises(ValueError, match="texture_pattern_scale"):
        synthetic_scenes.render_multi_object_scene(
            np.random.default_rng(0), 2, 32, texture_pattern_scale=1.5
        )


def test_scene_copies_are_one_object_stamped_apart_and_masked_as_one():
    resolution, count, copies, distance = 96, 2, 3, 0.3
    scene = synthetic_scenes.render_multi_object_scene(
        np.random.default_rng(2),
        count,
        resolution,
        total_area=0.24,
        copies=copies,
        copy_distance=distance,
        return_layers=True,
    )
    coverage, masks = scene["coverage"], scene["masks"]
    assert coverage.shape == (count * copies, resolution, resolution)
    assert masks.shape == (resolution, resolution, count)
    inside = coverage > 0.5
    # Object k's mask is exactly the union of its copies (rows k * copies ...), disjoint.
    union = inside.reshape(count, copies, resolution, resolution).any(axis=1)
    np.testing.assert_array_equal(masks >= 128, np.moveaxis(union, 0, -1))
    assert (masks > 0).sum(-1).max() <= 1
    areas = inside.sum(axis=(1, 2)).reshape(count, copies)
    y, x = np.mgrid[:resolution, :resolution]
    centres = np.stack(
        [(inside * x).sum((1, 2)), (inside * y).sum((1, 2))], axis=-1
    ) / inside.sum((1, 2))[:, None]
    for k in range(count):
        # The same shape and size at every place (pixel counts within anti-aliasing noise) ...
        assert np.ptp(areas[k]) <= 0.06 * areas[k].mean()
        # ... the copies' centres at least copy_distance of the side apart ...
        rows = centres[k * copies : (k + 1) * copies]
        gaps = np.linalg.norm(rows[:, None] - rows[None], axis=-1)[np.triu_indices(copies, 1)]
        assert gaps.min() > distance * resolution - 1.0
        # ... and the same base colour: the copies' mean colours are close, the objects' differ.
        solid = coverage[k * copies : (k + 1) * copies] == 1.0
        colours = [scene["foreground"][k * copies + c][solid[c]].mean(0) for c in range(copies)]
        assert np.abs(np.array(colours) - colours[0]).max() < 0.1
    first_colours = [scene["foreground"][k * copies][coverage[k * copies] == 1.0].mean(0)
                     for k in range(count)]
    assert np.abs(first_colours[0] - first_colours[1]).max() > 0.1


def test_scene_copies_check_their_arguments():
    render = synthetic_scenes.render_multi_object_scene
    with pytest.raises(ValueError, match="copies"):
        render(np.random.default_rng(0), 2, 32, copies=0)
    with pytest.raises(ValueError, match="copy_distance"):
        render(np.random.default_rng(0), 2, 32, copies=2, copy_distance=1.0)
    with pytest.raises(ValueError, match="cannot place"):
        render(np.random.default_rng(0), 2, 64, total_area=0.1, copies=4, copy_distance=0.9)
