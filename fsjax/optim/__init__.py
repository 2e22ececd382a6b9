"""fsjax.optim."""
