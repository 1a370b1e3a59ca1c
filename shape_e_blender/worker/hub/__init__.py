"""Model weights from a local folder or a hub repo: look-up in the cache, download, resume.

Nothing here imports torch.
"""
