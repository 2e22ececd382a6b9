"""fsjax.losses."""
