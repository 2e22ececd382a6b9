"""Command-line helpers beside training (`python -m fsjax.tools.<name>`), e.g. `inspect_data`."""
