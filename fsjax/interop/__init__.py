"""Faceswap model files: reading (and later writing) Keras 2 `.h5` and Keras 3 `.keras`."""
