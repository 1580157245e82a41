"""Images and arrays: splits, the on-disk cache, download probes, ImageNet class names."""
