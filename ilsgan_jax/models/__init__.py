"""Networks: mapping, synthesis, discriminator, layered generator, estimators, segmenters."""
