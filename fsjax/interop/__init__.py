"""Faceswap's files: Keras 2 `.h5` and Keras 3 `.keras` models read and written, torch `.pth`
weights and optimizer states read, all as data only."""
