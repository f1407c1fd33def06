"""Crop geometry of the DRC protocol and the TensorFlow resize / scaling ops of the pipeline.

All boxes are integer pixel boxes `(top, left, height, width)` in the decoded image; every function
works on scalar tf tensors inside tf.data maps (and eagerly, which the tests use).
"""

import tensorflow as tf

# DRC/ILSGAN test crop of CUB: a square of side 1.5 * max(box w, box h) around the box centre.
CUB_TEST_CROP_SCALE = 1.5


def center_square_box(height: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """The largest centred square: (top, left, side, side), int32.

    The offset rounds down ((H - W) // 2 for a tall image), as in the reference.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    side = tf.minimum(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def cub_test_box(bbox: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """DRC test crop around a CUB bounding box, clipped to the image: (top, left, h, w), int32.

    bbox: [4] float, tfds BBoxFeature order (ymin, xmin, ymax, xmax) normalised to [0, 1].
    The pixel box (x, y, w, h) is recovered by rounding (CUB boxes are integers). As in the
    reference: r = floor(0.75 * max(w, h)), centre = floor((2x + w) / 2), floor((2y + h) / 2),
    crop rows [max(0, cy - r), min(H, cy + r)), columns likewise. The clipped crop need not be
    square; it is resized to R x R all the same (as in the reference). A degenerate crop (possible
    only with invalid boxes, e.g. under tfds mock data) is widened to at least one pixel.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    bbox = tf.clip_by_value(tf.cast(bbox, tf.float32), 0.0, 1.0)
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    y_min = tf.cast(tf.round(tf.minimum(bbox[0], bbox[2]) * height_f), tf.int32)
    y_max = tf.cast(tf.round(tf.maximum(bbox[0], bbox[2]) * height_f), tf.int32)
    x_min = tf.cast(tf.round(tf.minimum(bbox[1], bbox[3]) * width_f), tf.int32)
    x_max = tf.cast(tf.round(tf.maximum(bbox[1], bbox[3]) * width_f), tf.int32)
    box_h = y_max - y_min
    box_w = x_max - x_min
    half_side = tf.cast(
        tf.floor(tf.cast(tf.maximum(box_w, box_h), tf.float32) * (CUB_TEST_CROP_SCALE / 2.0)),
        tf.int32,
    )
    centre_x = (2 * x_min + box_w) // 2
    centre_y = (2 * y_min + box_h) // 2
    top = tf.clip_by_value(centre_y - half_side, 0, height - 1)
    left = tf.clip_by_value(centre_x - half_side, 0, width - 1)
    bottom = tf.minimum(height, centre_y + half_side)
    right = tf.minimum(width, centre_x + half_side)
    return top, left, tf.maximum(bottom - top, 1), tf.maximum(right - left, 1)


def crop_and_resize(image: tf.Tensor, box: tuple[tf.Tensor, ...], resolution: int) -> tf.Tensor:
    """Crops `box` out of `image` [H, W, C] uint8 and resizes to [R, R, C] float32 in [0, 255].

    Bilinear with antialiasing (a triangle filter widened by the scale when shrinking, like PIL's
    BILINEAR resize that the reference uses through torchvision).
    """
    top, left, crop_h, crop_w = box
    crop = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
    resized = tf.image.resize(
        tf.cast(crop, tf.float32), (resolution, resolution), method="bilinear", antialias=True
    )
    return tf.clip_by_value(resized, 0.0, 255.0)


def random_crop_side(scale: float, resolution: int) -> int:
    """Side `int(scale * R)` of the square that a random training crop of side R is cut from
    (PerturbGAN's `--org_to_crop`, which truncates the same way); R when `scale` is 1."""
    return int(scale * resolution)


def resize_and_random_crop(
    image: tf.Tensor, side: int, resolution: int, seed: tf.Tensor
) -> tf.Tensor:
    """Resizes `image` [H, W, C] uint8 to [side, side, C] (`crop_and_resize` of the whole image)
    and cuts out the R x R window at offsets (top, left) drawn uniformly from 0..side - R each,
    as a stateless function of `seed` ([2] int). Returns uint8 [R, R, C] (rounded)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    resized = crop_and_resize(image, (0, 0, height, width), side)
    top, left = tf.unstack(
        tf.random.stateless_uniform(
            [2], seed=seed, minval=0, maxval=side - resolution + 1, dtype=tf.int32
        )
    )
    return to_uint8(resized[top : top + resolution, left : left + resolution])


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """float32 in [0, 255] -> uint8 (rounded)."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def mask_scale(mask: tf.Tensor) -> tf.Tensor:
    """Full-scale value of a decoded uint8 mask: 1 for 0/1 masks (max <= 1), else 255."""
    return tf.where(tf.reduce_max(mask) <= 1, 1.0, 255.0)


def images_to_unit_range(images: tf.Tensor) -> tf.Tensor:
    """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1]."""
    return tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0


def masks_to_binary(masks: tf.Tensor) -> tf.Tensor:
    """uint8 masks in [0, 255] -> float32 in {0, 1}, thresholded at 0.5 (value > 127.5)."""
    return tf.cast(tf.cast(masks, tf.float32) > 127.5, tf.float32)


def resize_mask_to(mask: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Resizes mask [h, w, 1] uint8 to [height, width, 1] uint8 (nearest); no-op if equal.

    Real CUB masks have their image's size; tfds mock data draws the two sizes independently.
    """
    same = tf.logical_and(tf.equal(tf.shape(mask)[0], height), tf.equal(tf.shape(mask)[1], width))
    return tf.cond(
        same,
        lambda: mask,
        lambda: tf.cast(
            tf.image.resize(mask, tf.stack([height, width]), method="nearest"), tf.uint8
        ),
    )
