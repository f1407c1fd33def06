"""ilsgan_jax: ILSGAN and the layered-GAN family for unsupervised segmentation, in JAX/Flax."""

__version__ = "0.1.0"
