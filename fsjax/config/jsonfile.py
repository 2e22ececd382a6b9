"""JSON from files fsjax did not write (state files, Keras model configs, stored graphs): parsed as
data only, refused when it is too large or nested too deeply for the recursive walks that read it.

Python's `json` raises RecursionError on deep nesting, and a value it does parse can still
overflow the stack of the code that walks it; both become a plain ValueError here, so every caller
reports it as it reports any other broken file, naming the file.
"""

from __future__ import annotations

import json
from typing import Any

MAX_BYTES = 64 * 2**20
MAX_DEPTH = 64  # Faceswap's deepest Keras configs nest about 15 levels


def parse(text: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(text)`, or ValueError when it is not JSON, too large or too deep."""
    if len(text) > max_bytes:
        raise ValueError(f"{len(text):,} bytes of JSON, more than the {max_bytes:,} allowed")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested more than {max_depth} levels deep") from None
    stack = [(value, 1)]
    while stack:  # depth of the parsed value, without recursion
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"JSON nested more than {max_depth} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value
