"""fsjax.training."""
