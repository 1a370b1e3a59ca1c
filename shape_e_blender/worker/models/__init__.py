"""The models: devices and precision, which weight files a folder offers, loading, the warm cache.

Only ``weights`` is free of torch (the download uses it); the other modules import torch.
"""
