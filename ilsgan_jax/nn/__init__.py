"""StyleGAN2 building blocks in NHWC: FIR resampling, bias_act, equalized layers, modulated conv."""
