"""fsjax: Faceswap's training system, reimplemented in JAX and Flax."""

from absl import flags as _absl_flags

# grain's worker processes read an absl flag; under a plain `python -m` or pytest nobody parses
# absl flags, so mark them parsed (reference/stack.md §7).
if not _absl_flags.FLAGS.is_parsed():
    _absl_flags.FLAGS.mark_as_parsed()

__version__ = "0.1.0"
