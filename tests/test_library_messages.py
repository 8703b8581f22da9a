"""The library reports through ``logging`` and prints nothing itself; the command-line tools show its notes and
warnings on stderr exactly as they printed them before, and leave the logger as they found it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from percept import api
from percept.cli.main import main as percept_main
from percept.encoders.pipeline import FAILED_LIST, encode_images

MODEL = "percept:tiny"


def draw_images(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    for number in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(folder / f"img{number}.png")
    return folder


def logger_state() -> tuple[int, bool, list[logging.Handler]]:
    logger = logging.getLogger("percept")
    return logger.level, logger.propagate, list(logger.handlers)


def test_the_encode_command_shows_the_library_notes_and_warnings_on_stderr(tmp_path, capsys):
    images = draw_images(tmp_path / "images", 5)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "emb"
    before = logger_state()
    assert percept_main(["encode", str(images), "-o", str(out), "-m", MODEL]) == 0
    captured = capsys.readouterr()
    lines = [line.rsplit("\r", 1)[-1] for line in captured.err.splitlines()]  # progress bars redraw with \r
    assert f"6 images, 6 encoded, 0 from the cache: {out}" in lines
    assert f"warning: 1 of 6 images could not be read and were skipped (listed in {out / FAILED_LIST})" in lines
    assert "encoded" not in captured.out
    assert logger_state() == before

    assert percept_main(["encode", str(images), "-o", str(out), "-m", MODEL, "-q"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert not any("from the cache" in line for line in lines)  # --quiet: no notes...
    assert f"warning: 1 of 6 images could not be read and were skipped (listed in {out / FAILED_LIST})" in lines


def test_the_library_prints_no_notes_and_logs_them_instead(tmp_path, capsys, caplog):
    images = draw_images(tmp_path / "images", 4)
    caplog.set_level(logging.INFO, logger="percept")
    encode_images(images, tmp_path / "emb", MODEL)
    captured = capsys.readouterr()
    assert "from the cache" not in captured.err and captured.out == ""
    assert [(record.name, record.levelno, record.getMessage()) for record in caplog.records] == [
        ("percept.encoders.pipeline", logging.INFO, f"4 images, 4 encoded, 0 from the cache: {tmp_path / 'emb'}")]


def test_the_notebook_api_logs_its_loading_notes(tmp_path, capsys, caplog):
    survey = tmp_path / "survey"
    assert percept_main(["sample", str(survey), "--images", "40", "-q"]) == 0
    sorted((survey / "images").iterdir())[0].unlink()  # a survey image without an embedding: a note per category
    assert percept_main(["encode", str(survey / "images"), "-o", str(survey / "embeddings"), "-M", MODEL, "-q"]) == 0
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="percept")
    data = api.load_survey(survey / "data.geojson", survey / "embeddings", clip_model=MODEL, quiet=False)
    assert len(data.names) == 39
    assert capsys.readouterr().out == ""
    notes = [record.getMessage() for record in caplog.records if record.name == "percept.api"]
    assert notes and all("dropped 1 of" in note and "without an embedding" in note for note in notes)
    assert all(record.levelno == logging.INFO for record in caplog.records if record.name == "percept.api")
    caplog.clear()
    api.load_survey(survey / "data.geojson", survey / "embeddings", clip_model=MODEL)  # quiet by default
    assert not [record for record in caplog.records if record.name == "percept.api"]
