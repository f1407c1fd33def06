"""PerturbGAN (Bielski & Favaro, 2019) as a configuration of the layered framework: ILSGAN's
generator and losses with ILS off, the random shift of foreground + mask before D (and the
optional background contrast jitter), NS + R1 or the original's WGAN-GP (`configs/perturbgan.py`).
Its own segmentation route, the encoder that inverts the frozen generator, is a stage
(`ilsgan_jax.stages.inversion`)."""

from ilsgan_jax.systems.ilsgan import layered_system

SYSTEM = layered_system("perturbgan")
