"""JSON from files fsjax did not write is refused when too deep or too large, naming the file."""

import pytest

from fsjax.checkpoint import state_file
from fsjax.checkpoint.state_file import ModelFolderError
from fsjax.config import jsonfile


@pytest.mark.parametrize("depth", [65, 100_000])
def test_too_deep_is_a_value_error(depth):
    with pytest.raises(ValueError, match="nested more than 64 levels deep"):
        jsonfile.parse("[" * depth + "]" * depth)
    assert jsonfile.parse("[" * 64 + "]" * 64) is not None  # the limit itself is fine


def test_too_large_is_refused_before_parsing():
    with pytest.raises(ValueError, match="11 bytes of JSON, more than the 10 allowed"):
        jsonfile.parse('"123456789"', max_bytes=10)
    big = " " * (jsonfile.MAX_BYTES + 1)
    with pytest.raises(ValueError, match="67,108,865 bytes of JSON, more than the 67,108,864"):
        jsonfile.parse(big)


@pytest.mark.parametrize("text,reason", [
    ('{"iterations": 1, "x": ' + "[" * 100 + "]" * 100 + "}", "nested more than 64 levels"),
    (" " * (jsonfile.MAX_BYTES + 1), "bytes of JSON, more than"),
], ids=["too-deep", "too-large"])  # not the 64 MiB text itself as the test's id
def test_fsjax_state_file_names_the_file(tmp_path, text, reason):
    path = tmp_path / "original_state.json"
    path.write_text(text)
    with pytest.raises(ModelFolderError) as err:
        state_file.load_state(path)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read the model state file (") and reason in message
