"""Faceswap's train switches (lib/cli/args_train.py), short and long, set what they set there."""


import pytest

from fsjax.config.switches import SWITCHES, expand
from fsjax.train import parse_cli

# Faceswap's switches, as its `train --help` lists them.
FACESWAP = [("-A", "--input-A"), ("-B", "--input-B"), ("-m", "--model-dir"), ("-t", "--trainer"),
            ("-b", "--batch-size"), ("-i", "--iterations"), ("-s", "--save-interval"),
            ("-I", "--snapshot-interval"), ("-w", "--write-image"), ("-n", "--no-logs"),
            ("-u", "--summary"), ("-a", "--warmup"), ("-r", "--use-lr-finder"),
            ("-l", "--load-weights"), ("-f", "--freeze-weights"), ("-M", "--warp-to-landmarks"),
            ("-P", "--no-flip"), ("-c", "--no-augment-color"), ("-W", "--no-warp"),
            ("-x", "--timelapse-input-A"), ("-y", "--timelapse-input-B"),
            ("-z", "--timelapse-output")]
# Given together: the other one of each pair.
PAIRS = {"--input-A": "--input-B", "--input-B": "--input-A",
         "--timelapse-input-A": "--timelapse-input-B", "--timelapse-input-B": "--timelapse-input-A",
         "--timelapse-output": "--timelapse-input-A"}
# fsjax's own spellings, which stay.
FSJAX = ["--faces-a", "--faces-b", "--model-dir", "--batch-size", "--iterations",
         "--save-interval", "--snapshot-interval", "--no-flip", "--no-warp", "--no-augment-color",
         "--warp-to-landmarks", "--write-image", "--no-logs", "--summary", "--warmup",
         "--use-lr-finder", "--load-weights", "--freeze-weights"]


def _field(config, target):
    section, name = target.removeprefix("--config.").split(".")
    return getattr(getattr(config, section), name.replace("-", "_"))


def _values(data_dir, tmp_path):
    model = tmp_path / "model"
    other = tmp_path / "other"
    other.mkdir()
    return {"--input-A": str(data_dir / "faces/A"), "--input-B": str(data_dir / "faces/B"),
            "--model-dir": str(model), "--load-weights": str(other), "--trainer": "dfl-sae",
            "--batch-size": "8", "--iterations": "40", "--save-interval": "30",
            "--snapshot-interval": "500", "--warmup": "7",
            "--timelapse-input-A": str(data_dir / "faces/A"),
            "--timelapse-input-B": str(data_dir / "faces/B"), "--timelapse-output": str(other)}


def test_every_faceswap_switch_is_accepted_short_and_long(data_dir, tmp_path):
    # fsjax's own switches (--preview-scale, --timelapse-video) have no short form.
    assert sorted((s.short, s.long) for s in SWITCHES if s.short) == sorted(FACESWAP)
    values = _values(data_dir, tmp_path)
    # `-w` turns on what fsjax already does by default: start from it turned off.
    base = ["--config.train.no-write-image"]
    default = parse_cli(base)
    for short, long in FACESWAP:
        switch = next(s for s in SWITCHES if s.long == long)
        pair = []
        if other := PAIRS.get(long):
            pair = [other, values[other]]
            if long == "--timelapse-output":
                pair += ["--timelapse-input-B", values["--timelapse-input-B"]]
        value = [values[long]] if switch.metavar else []
        # Faceswap names plugins with dashes (dfl-sae), fsjax with underscores.
        nested_value = ["dfl_sae"] if long == "--trainer" else value
        nested = parse_cli(base + pair + [switch.target, *nested_value])
        assert _field(nested, switch.target) != _field(default, switch.target), long
        forms = [[short, *value], [long, *value]]
        if value:
            forms += [[f"{short}{value[0]}"], [f"{short}={value[0]}"], [f"{long}={value[0]}"]]
        for form in forms:
            assert parse_cli(base + pair + form) == nested, form


def test_fsjax_spellings_stay(data_dir, tmp_path):
    values = _values(data_dir, tmp_path) | {"--faces-a": str(data_dir / "faces/A"),
                                            "--faces-b": str(data_dir / "faces/B")}
    for flag in FSJAX:
        switch = next(s for s in SWITCHES if flag in (s.long, *s.also))
        assert expand([flag, values[flag]] if switch.metavar else [flag]) == (
            [switch.target, values[flag]] if switch.metavar else [switch.target])
    config = parse_cli(["--faces-a", values["--faces-a"], "--faces-b", values["--faces-b"],
                        "--batch-size", "4", "--no-flip"])
    assert config.train.batch_size == 4 and config.augment.no_flip
    assert str(config.data.faces_a) == values["--faces-a"]


def test_timelapse_and_preview_switches(data_dir, tmp_path, capsys):
    faces_a, faces_b = str(data_dir / "faces/A"), str(data_dir / "faces/B")
    # Faceswap 2's deprecated -tia/-tib/-to, matched whole (not `-t ia`).
    config = parse_cli(["-tia", faces_a, "-tib", faces_b, "-to", str(tmp_path), "-m", "m",
                        "--timelapse-video", "--preview-scale", "50"])
    train = config.train
    assert (str(train.timelapse_input_a), str(train.timelapse_input_b)) == (faces_a, faces_b)
    assert train.timelapse_folder == tmp_path and train.timelapse_video
    assert train.preview_scale == 50 and config.model.name == "original"
    config = parse_cli(["--timelapse-input-a", faces_a, "--timelapse-input-b", faces_b,
                        "-m", str(tmp_path / "m")])
    assert config.train.timelapse_folder == tmp_path / "m" / "timelapse"
    assert parse_cli([]).train.timelapse_folder is None
    for argv, message in ((["-x", faces_a], "needs both --timelapse-input-A and"),
                          (["-z", str(tmp_path)], "--timelapse-output and --timelapse-video"),
                          (["--preview-scale", "5"], "preview_scale=5 is out of range")):
        with pytest.raises(SystemExit):
            parse_cli(argv)
        assert message in " ".join(capsys.readouterr().err.split()), argv


def test_grouped_and_mixed_forms():
    config = parse_cli(["-PcW", "-b", "4", "--config.loss.eye-multiplier", "2", "-t", "DFL-H128"])
    assert config.augment.no_flip and config.augment.no_augment_color and config.augment.no_warp
    assert config.train.batch_size == 4 and config.loss.eye_multiplier == 2.0
    assert config.model.name == "dfl_h128"
    # A switch's value is passed on as written, even if it looks like a switch.
    assert expand(["-m", "-P"]) == ["--config.train.model-dir", "-P"]
    # Anything else is left for the option parser.
    assert expand(["-h", "-q", "--input"]) == ["-h", "-q", "--input"]


def test_help_starts_with_faceswaps_switches(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_cli(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("Faceswap's train switches")
    head = out[:out.index("--config.model.name")]
    for short, long in FACESWAP:
        assert f"{short}, {long}" in head, long
