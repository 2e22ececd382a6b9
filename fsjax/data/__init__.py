"""fsjax.data."""
