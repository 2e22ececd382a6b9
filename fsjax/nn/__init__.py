"""fsjax.nn."""
