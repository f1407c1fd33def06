"""Objectives of the layered GANs as pure, batch-vectorised JAX functions (NHWC).

composite     alpha compositing of the layers
perturbation  PerturbGAN layer perturbation (integer shift with zero fill, contrast jitter)
gan_losses    non-saturating + lazy R1, and WGAN-GP, per sample
mask_losses   binarisation and minimum-size mask regularisers, per sample
ils           the ILS (CLUB) term with fixed or learned conditionals, and the estimator's NLL
schedules     ILS sigma, generator EMA beta, lazy-regularisation Adam, R1 gamma heuristic
resampling    PyTorch-rule nearest-neighbour resizing
"""
