"""Encoding precision and runtime: reduced precision agrees with float32, the cache records and never mixes
them, JPEG files are decoded at the size the model needs, and the model normalises 8-bit pixels itself."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from percept.cli.main import main as percept_main
from percept.encoders import encode_pil_images, load_encoder, precision
from percept.encoders.cache import read_manifest
from percept.encoders.pipeline import encode_images, encode_texts
from percept.encoders.stages import open_drafted, read_image
from percept.errors import PerceptError

#: A small ViT (random weights) with enough depth that reduced precision has rounding to accumulate.
ARCH = "PerceptPrecisionTest"
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
MODEL = f"open_clip:{ARCH}"


@pytest.fixture(scope="module", autouse=True)
def prec_arch(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("arch") / f"{ARCH}.json"
    path.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(path)


def _scene(seed: int, size=(160, 120)) -> Image.Image:
    """A smooth street-like picture (sky, facade, road) with noise, as JPEG decoding sees photographs."""
    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    rows = np.linspace(0, 1, height)[:, None, None]
    base = np.where(rows < 0.4, rng.uniform(120, 230, 3), np.where(rows < 0.7, rng.uniform(40, 200, 3),
                                                                    rng.uniform(30, 90, 3)))
    pixels = np.broadcast_to(base, (height, width, 3)) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def prec_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for seed in range(12):
        _scene(seed).save(folder / f"scene_{seed:02d}.jpg", quality=90)
    return folder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


RUNTIMES = [("bf16", "torch"), ("fp16", "torch"),
            pytest.param("bf16", "openvino", marks=pytest.mark.skipif(not precision.openvino_installed(),
                                                                      reason="openvino is not installed")),
            pytest.param("fp32", "openvino", marks=pytest.mark.skipif(not precision.openvino_installed(),
                                                                      reason="openvino is not installed"))]


@pytest.mark.parametrize("reduced, runtime", RUNTIMES)
def test_reduced_precision_agrees_with_fp32(reduced, runtime):
    images = [_scene(seed) for seed in range(8)]
    texts = ["a street with trees", "a busy road with cars", "a quiet square"]
    exact = load_encoder(MODEL, "random", "cpu", "fp32", "torch")
    other = load_encoder(MODEL, "random", "cpu", reduced, runtime)
    assert (other.precision, other.runtime) == (reduced, runtime)
    ours, theirs = encode_pil_images(other, images), encode_pil_images(exact, images)
    assert ours.dtype == np.float32 and ours.shape == (8, 32)
    assert _cosines(ours, theirs).min() >= 0.999
    assert _cosines(other.encode_texts(texts), exact.encode_texts(texts)).min() >= 0.999
    if reduced != "fp32":  # the reduced precision really ran: not bit for bit the float32 vectors
        assert not np.array_equal(ours, theirs)


def test_pixels_are_normalised_inside_the_model_as_the_model_s_own_transform_does():
    import open_clip
    import torch

    encoder = load_encoder(MODEL, "random", "cpu", "fp32", "torch")
    _, _, own = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    image = _scene(3)
    pixels = encoder.transform(image)
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, 64, 64)
    assert encoder.transform.draft_size == 64
    with torch.inference_mode():
        expected = encoder.model.encode_image(own(image)[None]).numpy()
    np.testing.assert_allclose(encoder.encode_image_batch(pixels[None])[0], expected[0] / np.linalg.norm(expected),
                               atol=1e-5)


def test_jpeg_files_are_decoded_at_the_smallest_scale_not_below_the_model_input(tmp_path):
    photo = tmp_path / "photo.jpg"
    _scene(1, size=(640, 480)).save(photo, quality=90)
    assert open_drafted(photo, 224).size == (320, 240)  # 1/4 would give 160 x 120, below 224
    assert open_drafted(photo, 100).size == (160, 120)
    assert open_drafted(photo, 32).size == (80, 60)  # 1/8 is libjpeg's smallest scale
    assert open_drafted(photo, 300).size == (640, 480)
    assert open_drafted(photo, None).size == (640, 480)
    png = tmp_path / "photo.png"
    _scene(1, size=(640, 480)).save(png)
    assert open_drafted(png, 224).size == (640, 480)  # only JPEG decoders scale


def test_drafted_jpeg_is_upright_and_close_to_the_full_decoding(tmp_path):
    image = _scene(2, size=(640, 480))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    drafted = open_drafted(tmp_path / "rotated.jpg", 224)
    assert drafted.size == (240, 320) and drafted.mode == "RGB"
    full = open_drafted(tmp_path / "rotated.jpg", None).resize(drafted.size, Image.Resampling.BOX)
    difference = np.abs(np.asarray(drafted, dtype=np.int16) - np.asarray(full, dtype=np.int16))
    assert difference.mean() < 3


def test_damaged_jpeg_gives_the_usual_reason(tmp_path):
    photo = tmp_path / "photo.jpg"
    _scene(1, size=(640, 480)).save(photo, quality=90)
    photo.write_bytes(photo.read_bytes()[:2000])
    encoder = load_encoder(MODEL, "random", "cpu", "fp32", "torch")
    tensor, reason = read_image(photo, encoder.transform)
    assert tensor is None and f"image {photo} is truncated or corrupt" in reason and "use an intact copy" in reason
    header_only = tmp_path / "huge.jpg"
    header_only.write_bytes(b"\xff\xd8\xff\xc0\x00\x11\x08\x4e\x20\x4e\x20\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01")
    tensor, reason = read_image(header_only, encoder.transform)
    assert tensor is None and "megapixels" in reason  # the size limits still come first


def test_the_cache_records_precision_and_runtime_and_never_mixes_them(prec_images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="percept")
    out = tmp_path / "emb"
    first = encode_images(prec_images, out, MODEL, pretrained="random", precision="fp32", quiet=True)
    manifest = read_manifest(out, "img")
    assert (manifest.precision, manifest.runtime) == ("fp32", precision.resolve_runtime("auto", "cpu"))
    caplog.clear()
    again = encode_images(prec_images, out, MODEL, pretrained="random", precision="fp32")
    assert "0 encoded, 12 from the cache" in caplog.text
    np.testing.assert_array_equal(again.vectors, first.vectors)

    caplog.clear()
    reduced = encode_images(prec_images, out, MODEL, pretrained="random", precision="bf16")
    err = caplog.text
    assert "it was encoded in fp32 on" in err and "not bf16 on" in err and "12 encoded, 0 from the cache" in err
    assert read_manifest(out, "img").precision == "bf16"
    assert not np.array_equal(reduced.vectors, first.vectors)
    assert _cosines(reduced.vectors.astype(np.float64), first.vectors.astype(np.float64)).min() >= 0.999


def test_a_manifest_without_precision_is_encoded_anew(prec_images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="percept")
    out = tmp_path / "emb"
    encode_images(prec_images, out, "percept:tiny", quiet=True)
    path = out / "percept_img_manifest.json"
    data = json.loads(path.read_text())
    assert (data["precision"], data["runtime"]) == ("fp64", "numpy")
    del data["precision"], data["runtime"]  # as manifests were written before precisions were recorded
    path.write_text(json.dumps(data))
    encode_images(prec_images, out, "percept:tiny")
    err = caplog.text
    assert "does not record the precision and runtime" in err and "12 encoded" in err


def test_text_cache_records_precision(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="percept")
    out = tmp_path / "text"
    encode_texts(["a.jpg"], ["shops count is 3"], out, MODEL, pretrained="random", precision="fp32", quiet=True)
    assert read_manifest(out, "text").precision == "fp32"
    encode_texts(["a.jpg"], ["shops count is 3"], out, MODEL, pretrained="random", precision="bf16")
    assert "1 encoded" in caplog.text and read_manifest(out, "text").precision == "bf16"


def test_auto_is_the_fastest_native_precision(monkeypatch, tmp_path):
    reads = precision.cpu_has_bf16.__wrapped__  # the flags of a given cpuinfo file, not cached

    def cpu_with(flags: str) -> None:
        info = tmp_path / f"cpuinfo-{len(flags)}"
        info.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: reads(str(info)))

    cpu_with("avx512f amx_tile amx_bf16")
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("auto", "cuda") == "fp16"
    cpu_with("avx512f avx512_bf16")
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    cpu_with("avx512f")
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert precision.resolve_precision("fp16", "cpu") == "fp16"
    assert not reads(str(tmp_path / "missing"))
    with pytest.raises(PerceptError, match="--precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        precision.resolve_precision("fp8", "cpu")


def test_runtime_choice_and_its_errors(monkeypatch):
    with pytest.raises(PerceptError, match="OpenVINO encodes on the CPU only"):
        precision.resolve_runtime("openvino", "cuda")
    assert precision.resolve_runtime("auto", "cuda") == "torch"
    monkeypatch.setattr(precision, "openvino_installed", lambda: False)
    assert precision.resolve_runtime("auto", "cpu") == "torch"
    with pytest.raises(PerceptError, match=r"pip install 'percept\[openvino\]'"):
        precision.resolve_runtime("openvino", "cpu")


def test_built_in_models_refuse_reduced_precision(prec_images, tmp_path, capsys):
    with pytest.raises(PerceptError, match="percept:tiny is built in and computes in float64"):
        encode_images(prec_images, tmp_path / "emb", "percept:tiny", precision="bf16", quiet=True)
    assert percept_main(["encode", str(prec_images), "-M", "percept:tiny", "--precision", "fp16",
                         "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "error: percept:tiny is built in and computes in float64" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_encode_command_takes_the_precision(prec_images, tmp_path):
    out = tmp_path / "emb"
    assert percept_main(["encode", str(prec_images), "-M", MODEL, "--pretrained", "random", "--precision", "bf16",
                         "-o", str(out), "-q"]) == 0
    assert read_manifest(out, "img").precision == "bf16"
