"""The real evaluation split with its masks as whole arrays, for scoring segmenters."""

import ml_collections
import numpy as np

from ilsgan_jax.data import input_pipeline


def load_eval_split(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """`config.data.eval_split` of `config.data`, read by one process in batches of
    `config.segmenter.eval_batch_size` (padding dropped): images float32 [N, R, R, 3] in
    [-1, 1], masks [N, R, R] in {0, 1}.

    Raises ValueError when the split has no masks."""
    images, masks = [], []
    for batch in input_pipeline.create_eval_iterator(
        config.data,
        split=config.data.eval_split,
        batch_size=config.segmenter.eval_batch_size,
        process_index=0,
        process_count=1,
    ):
        if "mask" not in batch:
            raise ValueError(
                f"config.data.eval_split={config.data.eval_split!r} of {config.data.name!r} has "
                "no masks: the segmenter cannot be scored"
            )
        valid = batch["valid"]
        images.append(batch["image"][valid])
        masks.append(batch["mask"][valid][..., 0])
    return np.concatenate(images), np.concatenate(masks)
