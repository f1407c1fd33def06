"""Input data: tfds builders, DRC preprocessing and the tf.data pipeline.

Modules: config (the `config.data` defaults), synthetic_render / synthetic_shapes /
synthetic_builder (the built-in synthetic objects data set, noise or structured backgrounds),
synthetic_scenes / builtin_images (built-in multi-object pictures for the one-image setting),
single_image (random crops of one picture), folder (the user's image folders), drc (Stanford
Dogs / Cars in the DRC layout), cub_split (DRC's CUB split, shipped in cub_split/, and the note of
reports on tfds's split), preprocess (crop geometry and resizing), sources (every source behind
one interface), input_pipeline (training and evaluation iterators of per-process NumPy batches),
eval_split (the evaluation split with its masks as whole arrays).
"""
