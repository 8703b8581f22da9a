"""One vocabulary for flags: -M/--clip-model, --model (a model file), -e/--embeddings-dir, -k, --random-seed;
old spellings still work and stay out of --help."""

from __future__ import annotations

import pytest

from percept.cli.main import build_parser

HIDDEN = {"encode": ["-m", "--model"], "rate": ["--embeddings", "--k"], "predict": ["--k"],
          "evaluate": ["--seed", "--group-by-image"], "sample": ["--seed"]}


def parse(*argv: str):
    return build_parser(list(argv)).parse_args(list(argv))


@pytest.mark.parametrize("command, flags", [
    ("encode", ["-M", "--clip-model"]), ("rate", ["-M", "--clip-model", "-e", "--embeddings-dir", "-k", "--model"]),
    ("predict", ["-M", "--clip-model", "-k", "--model"]), ("serve", ["-M", "--clip-model", "-k", "--model"]),
    ("evaluate", ["-M", "--clip-model", "-e", "--embeddings-dir", "-k", "--random-seed"]),
    ("sample", ["--random-seed"]),
])
def test_the_shared_flags_are_in_help(command, flags, capsys):
    with pytest.raises(SystemExit):
        parse(command, "--help")
    text = capsys.readouterr().out
    for flag in flags:
        assert f" {flag}" in text, flag
    for old in HIDDEN.get(command, []):
        assert f" {old} " not in text and f" {old}," not in text and f"{old}\n" not in text, old


def test_old_spellings_mean_the_same():
    assert parse("encode", "imgs", "-m", "open_clip:ViT-B-32").clip_model == "open_clip:ViT-B-32"
    assert parse("encode", "imgs", "--model", "percept:small").clip_model == "percept:small"
    from percept.cli.encode import DEFAULT_MODEL

    assert parse("encode", "imgs").clip_model == DEFAULT_MODEL  # the hidden alias never overrides the default
    new = parse("rate", "--model", "m.npz", "-e", "emb", "-k", "7", "--out", "r.csv")
    old = parse("rate", "--model", "m.npz", "--embeddings", "emb", "--k", "7", "--out", "r.csv")
    assert (new.embeddings, new.k) == (old.embeddings, old.k) == ("emb", 7)
    assert parse("predict", "--model", "m.npz", "--k", "3", "x.jpg").k == 3
    assert parse("evaluate", "-g", "d.geojson", "-M", "percept:tiny", "--seed", "5").random_seed == 5
    assert parse("evaluate", "-g", "d.geojson", "-M", "percept:tiny").random_seed == 0
    assert parse("sample", "out", "--seed", "3").random_seed == 3
