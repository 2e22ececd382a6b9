"""fsjax.tools."""
