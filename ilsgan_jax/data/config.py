"""Default configuration of the input pipeline (embedded by the main config as `config.data`)."""

import ml_collections
from ml_collections import config_dict

from ilsgan_jax.data import cub_split

DATA_SOURCES = ("synthetic", "cub", "dogs", "cars", "folder")


def default_data_config() -> ml_collections.ConfigDict:
    """Returns the data configuration with every field set to its default."""
    config = ml_collections.ConfigDict()
    # Which data set: 'synthetic' (built-in objects with exact masks, no download), 'cub'
    # (tfds caltech_birds2011, DRC crops), 'dogs' / 'cars' (DRC release folder at `drc_root`),
    # 'folder' (the user's own images at `folder`, masks optional at `mask_folder`).
    config.name = "synthetic"
    # Side of the square images the pipeline yields, in pixels: a power of two in 16..256.
    config.resolution = 64
    # tfds data_dir for the tfds sources ('synthetic', 'cub'); None means
    # ~/.cache/ilsgan_jax/tensorflow_datasets (or $ILSGAN_JAX_CACHE/tensorflow_datasets).
    config.data_dir = config_dict.placeholder(str)
    # 'folder' only: directory of images (searched recursively; jpg/jpeg/png/webp/bmp/gif).
    config.folder = config_dict.placeholder(str)
    # 'folder' only: directory of masks with the same relative path and stem as their images
    # (any of the supported extensions); None = no masks (training only, no mask scoring).
    config.mask_folder = config_dict.placeholder(str)
    # 'folder' only: True makes an image without a mask an error; False drops such images
    # (with a logged count). Only read when `mask_folder` is set.
    config.require_masks = True
    # 'dogs' / 'cars': the DRC release folder (e.g. .../DRC_processed/dogs); layout in drc.py.
    config.drc_root = config_dict.placeholder(str)
    # 'cub' only: the split. 'drc' = DRC's train_val_test_split.txt, the paper's (10,000 train,
    # 788 val, 1,000 test images); 'tfds' = tfds's train/test (5,994 / 5,794), whose scores are
    # not comparable with the paper's (a logged warning, and `split_warning` in the reports).
    config.cub_split = "drc"
    # 'cub' on 'drc': DRC's split file (`<image id> <0|1|2>` per line); default: the copy shipped
    # with the package (ReDO's file, CC BY-NC 4.0: ilsgan_jax/data/cub_split/README.md).
    config.cub_split_file = cub_split.SHIPPED_SPLIT_FILE
    # 'cub' on 'drc': CUB's images.txt (`<image id> <class>/<name>.jpg`), which names the split
    # file's ids; None = the one tfds extracted under <data_dir>/downloads when it prepared CUB.
    config.cub_images_file = config_dict.placeholder(str)
    # Random horizontal flips of the training images, probability 0.5 (StyleGAN2-ADA --mirror,
    # off by default there too).
    config.mirror = False
    # Random crops of the training images (PerturbGAN's --org_to_crop), a float >= 1: each image
    # as its source yields it (R x R) is resized to int(scale * R) and an R x R window at a
    # uniform offset (0..int(scale * R) - R per axis) is cut out, per example and epoch.
    # 1.0 = off. Training split only; 'single_image' makes its own crops and requires 1.0.
    config.random_crop_scale = 1.0
    # Shuffle buffer of the training stream, in examples (encoded records, so it is cheap).
    config.shuffle_buffer = 10_000
    # 'synthetic' only: number of images in the train and test splits, and the generator seed.
    config.synthetic_train_size = 20_000
    config.synthetic_test_size = 1_000
    config.synthetic_seed = 0
    # 'synthetic' only: amplitude multiplier of the backgrounds' band-limited noise (>= 0; 1 =
    # the data set as specified, other values get their own tfds config and cache directory).
    config.synthetic_background_noise = 1.0
    # 'synthetic' only: the backgrounds, 'noise' (muted gradients and band-limited noise: the
    # data set as specified) or 'structured' (the same with large sharp-edged bands, half-planes
    # and blobs in object colours painted over it, which a foreground layer can swallow; the
    # masks are the objects' alone). 'structured' gets its own tfds config and cache directory.
    config.synthetic_background = "noise"
    # 'single_image' only: a built-in picture instead of data.image_path, a rendered scene with
    # known per-object masks: 'multi_object_k2' / 'multi_object_k3' / 'multi_object_k4' (128 px,
    # K objects over one background), 'multi_object_k3_x4' (256 px, 3 objects, each at 4
    # places), 'multi_object_k3_x4_flat' (the same, objects without texture) or
    # 'multi_object_k3_x4_flat_sparse' (flat objects at half the area); builtin_images.py.
    # None = read data.image_path.
    config.builtin_image = config_dict.placeholder(str)
    # 'folder' and DRC folders: True skips unreadable/corrupt images (logged count and the first
    # few names); False raises a ValueError naming the first bad file.
    config.skip_corrupt = True
    # Batches prefetched by tf.data after batching; -1 = tf.data.AUTOTUNE.
    config.prefetch = 2
    # Parallel decode/resize calls; -1 = tf.data.AUTOTUNE.
    config.num_parallel_calls = -1
    # Split names used for training and for evaluation (mask scoring).
    config.train_split = "train"
    config.eval_split = "test"
    return config
