"""`stages.compare_instances`: the instances' visible masks in the back-to-front composite, and
the per-object IoU after the best matching of slots to objects in each crop."""

import itertools

import numpy as np
import pytest

from ilsgan_jax.nn.layers_k import composite_back_to_front
from ilsgan_jax.stages import compare_instances


def test_visible_masks_are_the_composite_weights():
    """Compositing with the visible masks as plain weights, plus the background's weight
    prod(1 - m), reproduces the back-to-front composite, and the weights sum to 1."""
    rng = np.random.default_rng(0)
    n, k, r = 3, 3, 8
    masks = rng.uniform(size=(n, k, r, r, 1)).astype(np.float32)
    fg = rng.uniform(-1, 1, size=(n, k, r, r, 3)).astype(np.float32)
    bg = rng.uniform(-1, 1, size=(n, r, r, 3)).astype(np.float32)
    visible = compare_instances.visible_instance_masks(masks)  # [N, R, R, K]
    assert visible.shape == (n, r, r, k)
    background = np.prod(1.0 - masks[..., 0], axis=1)[..., None]
    weighted = background * bg + np.einsum("nhwk,nkhwc->nhwc", visible, fg)
    np.testing.assert_allclose(weighted, composite_back_to_front(bg, fg, masks), atol=1e-5)
    np.testing.assert_allclose(visible.sum(-1) + background[..., 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(visible[..., -1], masks[:, -1, ..., 0])  # the top one is whole


def _square(r, top, left, size):
    mask = np.zeros((r, r), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_matching_finds_the_permutation_and_scores_partial_overlap():
    """Slots that are a permutation of the objects score 1 each; a slot shifted by a quarter of
    its square scores the IoU computed by hand; an absent object is not scored; a present object
    without any matching slot scores 0 in that crop."""
    r = 16
    a, b, c = _square(r, 0, 0, 4), _square(r, 8, 8, 4), _square(r, 0, 10, 4)
    objects = np.zeros((3, r, r, 3), bool)
    predicted = np.zeros((3, r, r, 3), bool)
    objects[0] = np.stack([a, b, c], -1)
    predicted[0] = np.stack([c, a, b], -1)  # permuted slots
    objects[1] = np.stack([a, b, np.zeros_like(a)], -1)  # object 2 absent
    predicted[1] = np.stack([b, _square(r, 1, 0, 4), np.zeros_like(a)], -1)  # a shifted by 1 row
    objects[2] = np.stack([a, np.zeros_like(a), np.zeros_like(a)], -1)  # no slot predicts it
    report = compare_instances.match_instances(predicted, objects)
    shifted_iou = 12 / 20
    expected = [(1 + shifted_iou + 0.0) / 3, 1.0, 1.0]
    np.testing.assert_allclose(report["per_instance_iou"], expected)
    assert report["crops_present"] == [3, 2, 1]
    assert report["min_instance_iou"] == pytest.approx(min(expected))


def test_matching_is_the_best_assignment():
    """On random masks the matched sum equals the best over all permutations."""
    rng = np.random.default_rng(1)
    predicted = rng.uniform(size=(1, 8, 8, 3)) > 0.6
    objects = rng.uniform(size=(1, 8, 8, 3)) > 0.6
    report = compare_instances.match_instances(predicted, objects)

    def iou(x, y):
        return np.logical_and(x, y).sum() / np.logical_or(x, y).sum()

    best = max(
        sum(iou(predicted[0, ..., p], objects[0, ..., j]) for j, p in enumerate(perm))
        for perm in itertools.permutations(range(3))
    )
    assert sum(report["per_instance_iou"]) == pytest.approx(best)


def test_objects_below_the_size_floor_are_not_scored_and_shapes_are_checked():
    objects = np.zeros((1, 20, 20, 2), bool)
    objects[0, 0, 0, 0] = True  # 1 pixel of 400: below 1%
    objects[0, :5, :5, 1] = True
    report = compare_instances.match_instances(np.zeros((1, 20, 20, 3), bool), objects)
    assert report["per_instance_iou"] == [None, 0.0] and report["crops_present"] == [0, 1]
    with pytest.raises(ValueError, match="T, R, R"):
        compare_instances.match_instances(np.zeros((2, 20, 20, 3), bool), objects)
