"""fsjax.checkpoint."""
