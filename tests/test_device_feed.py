"""Feeding the encoder's device: the model's transform built from its settings without its weights, 8-bit pixels
to the device (the Ray engine's read tasks included), JPEG files decoded where the model runs (here with
torchvision's decoder on the CPU, on CUDA where a GPU is present) and batches prefetched on a thread.

The decoder on a device is checked against the CPU path it replaces: the same reasons for every file it
does not decode, pixels within rounding of a drafted decoding, and vectors within cosine 0.999."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from image_fixtures import EXIF_ORIENTATION, exif_rotated_jpeg, street
from PIL import Image, ImageOps

from percept.encoders import load_encoder, open_clip_backend, pipeline
from percept.encoders.device_decode import (
    DeviceJpegDecoder,
    JpegFile,
    collate_for_device,
    device_decoder,
    read_for_device,
    upright,
)
from percept.encoders.device_feed import feed_for, prefetched, to_device
from percept.encoders.pixels import split_transform, tensor_steps
from percept.encoders.registry import resolve_model
from percept.encoders.stages import pixel_shape, read_image, stack_readable
from percept.engines.ray_encoding import EncodeBatches, pixel_dtype, read_pixels
from percept.synthetic.sample import draw_scene
from percept.synthetic.simulation import SUNNY_SHARE, street_profiles

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
VIT = "open_clip:ViT-B-32"
TINY_ARCH = "PerceptFeedTiny"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 48, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def feed_scenes(tmp_path_factory) -> list[Path]:
    """Six drawn street scenes saved as 640x480 JPEG files, as photographs arrive."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(7)
    paths = []
    for number, profile in enumerate(street_profiles(6, rng)):
        image, _ = draw_scene(profile, bool(rng.random() < SUNNY_SHARE), rng)
        path = folder / f"scene_{number}.jpg"
        image.resize((640, 480)).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def feed_vit():
    """An untrained ViT-B-32 in float32 on the CPU (no file needed)."""
    return load_encoder(VIT, "random", "cpu", "fp32", "torch")


@pytest.fixture(scope="module")
def feed_tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny open_clip architecture and a checkpoint of its random weights."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_ARCH}.json")
    model = open_clip.create_model(TINY_ARCH)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "weights.safetensors")
    return folder / "weights.safetensors"


def _hf_folder(folder: Path) -> Path:
    """A tiny transformers CLIP model saved with a 40-pixel bicubic resize and a 32-pixel crop."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                       image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]).save_pretrained(folder)
    config = CLIPConfig(
        text_config={"vocab_size": 3, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    return folder


def _same_pixels(transform, reference, paths: list[Path]) -> None:
    """Both transforms give identical pixels for every image, and the same decoding size and normalisation."""
    assert type(transform) is type(reference)
    assert getattr(transform, "draft_size", None) == getattr(reference, "draft_size", None)
    assert getattr(transform, "mean", None) == getattr(reference, "mean", None)
    assert getattr(transform, "std", None) == getattr(reference, "std", None)
    for path in paths:
        ours, theirs = read_image(path, transform)[0], read_image(path, reference)[0]
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def _no_weights(monkeypatch) -> None:
    """Building any CLIP model fails from here on."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr("percept.encoders.open_clip_backend.OpenClipEncoder.__init__", refuse)
    monkeypatch.setattr("percept.encoders.hf_backend.HfClipEncoder.__init__", refuse)
    monkeypatch.setattr("percept.encoders.builtin.BuiltinEncoder.__init__", refuse)


@pytest.mark.parametrize("name", ["percept:tiny", "percept:small", VIT])
def test_the_transform_without_weights_gives_the_loaded_model_s_pixels(name, feed_scenes, monkeypatch):
    resolved = resolve_model(name, "random" if name == VIT else None, "fp32", "torch", "cpu")
    loaded = resolved.load("cpu").transform
    _no_weights(monkeypatch)
    _same_pixels(resolved.load_transform(), loaded, feed_scenes)


def test_open_clip_settings_of_the_weights_reach_the_transform_without_them(feed_tiny_checkpoint, feed_scenes,
                                                                            monkeypatch):
    """Weights whose settings differ from open_clip's defaults (mean, std, interpolation, resize mode)."""
    import open_clip

    settings = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "interpolation": "bilinear",
                "resize_mode": "squash"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, tag: settings if tag == "custom" else {})
    weights = open_clip_backend.OpenClipWeights(TINY_ARCH, "custom", feed_tiny_checkpoint, "test")
    loaded = open_clip_backend.OpenClipEncoder(f"open_clip:{TINY_ARCH}", weights, "cpu").transform
    assert loaded.mean == settings["mean"] and loaded.std == settings["std"]
    assert "Resize(size=(48, 48), interpolation=bilinear" in repr(loaded.steps)  # squashed, not cropped
    assert "CenterCrop" not in repr(loaded.steps)
    _no_weights(monkeypatch)
    _same_pixels(open_clip_backend.image_transform(weights), loaded, feed_scenes)


def test_hugging_face_transform_without_weights(tmp_path, feed_scenes, monkeypatch):
    name = "hf_clip:example/tiny-clip"
    resolved = resolve_model(name, str(_hf_folder(tmp_path)), "fp32", "torch", "cpu")
    loaded = resolved.load("cpu").transform
    assert loaded.mean == (0.4, 0.5, 0.6) and loaded.draft_size == 40
    _no_weights(monkeypatch)
    _same_pixels(resolved.load_transform(), loaded, feed_scenes)


def test_tensor_steps_resize_and_crop_as_the_pil_steps_do(feed_vit, feed_scenes, tmp_path):
    from torchvision.transforms.functional import pil_to_tensor

    image = Image.open(feed_scenes[0]).convert("RGB")
    for transform in (feed_vit.transform, resolve_model("hf_clip:example/tiny-clip", str(_hf_folder(tmp_path)),
                                                         "fp32", "torch", "cpu").load_transform()):
        steps = tensor_steps(transform)
        on_tensor = steps(pil_to_tensor(image)[None])[0]
        on_pil = transform(image)
        assert on_tensor.dtype == torch.uint8 and on_tensor.shape == on_pil.shape
        difference = (on_tensor.int() - on_pil.int()).abs()
        assert difference.float().mean() < 0.5 and difference.max() <= 8  # rounding, not geometry
    assert tensor_steps(resolve_model("percept:tiny").load_transform()) is None  # PIL-only steps: the CPU path
    import open_clip

    longest = open_clip.image_transform(224, is_train=False, resize_mode="longest")
    assert tensor_steps(split_transform(longest)) is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_pixels_as_pil_turns_images(orientation, tmp_path):
    from torchvision.transforms.functional import pil_to_tensor

    pixels = street(24, 16, seed=orientation)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)  # lossless, tagged
    with Image.open(tmp_path / "turned.png") as stored:
        expected = pil_to_tensor(ImageOps.exif_transpose(stored).convert("RGB"))
    turned = upright(torch.from_numpy(pixels).permute(2, 0, 1), orientation)
    assert torch.equal(turned, expected)


def _files(folder: Path, scenes: list[Path]) -> dict[str, Path]:
    """A JPEG photograph, one turned by EXIF, and the files the device decoder must leave to the CPU path."""
    folder.mkdir()
    files = {"photo": scenes[0], "second": scenes[1]}
    files["rotated"] = folder / "rotated.jpg"
    files["rotated"].write_bytes(exif_rotated_jpeg(np.asarray(Image.open(scenes[2]).convert("RGB")), 6))
    files["png"] = folder / "plain.png"
    Image.open(scenes[3]).save(files["png"])
    files["cmyk"] = folder / "cmyk.jpg"
    Image.open(scenes[4]).convert("CMYK").save(files["cmyk"], quality=90)
    data = scenes[5].read_bytes()
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(data[:len(data) // 2])
    files["scrambled"] = folder / "scrambled.jpg"  # complete, its coded data garbage: decoded with warnings
    files["scrambled"].write_bytes(data[:700] + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8))
                                   .replace(b"\xff", b"\x00") + b"\xff\xd9")
    files["missing"] = folder / "missing.jpg"
    return files


def test_only_complete_rgb_jpeg_files_go_to_the_device_decoder(feed_vit, feed_scenes, tmp_path):
    files = _files(tmp_path / "files", feed_scenes)
    transform = feed_vit.transform
    read = {name: read_for_device(path, transform) for name, path in files.items()}
    for name in ("photo", "second", "rotated", "scrambled"):
        item, reason = read[name]
        assert isinstance(item, JpegFile) and reason is None
        assert item.data == files[name].read_bytes()
    assert read["photo"][0].orientation == 1 and read["rotated"][0].orientation == 6
    assert read["photo"][0].pixels == 640 * 480
    for name in ("png", "cmyk", "truncated", "missing"):  # the CPU path's result, as it would be anyway
        item, reason = read[name]
        expected, expected_reason = read_image(files[name], transform)
        assert not isinstance(item, JpegFile) and reason == expected_reason
        assert type(reason) is type(expected_reason)  # an unreachable file stays unreachable
        assert (item is None) == (expected is None) and (item is None or torch.equal(item, expected))
    assert read["png"][0] is not None and read["cmyk"][0] is not None
    assert "truncated or corrupt" in read["truncated"][1] and read["missing"][0] is None


def _decode_on(device: str, transform, files: dict[str, Path]):
    items = [(position, *read_for_device(path, transform)) for position, path in enumerate(files.values())]
    batch = collate_for_device(items)
    return DeviceJpegDecoder(transform, tensor_steps(transform), device)(batch)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _agrees_with_the_cpu_path(encoder, reference, files: dict[str, Path], device: str) -> None:
    """The device decoder's batch against the CPU path's: the same positions and reasons, pixels within the
    difference of a drafted decoding, vectors within cosine 0.999 (and far from other images' vectors)."""
    positions, pixels, failed = _decode_on(device, encoder.transform, files)
    expected_positions, expected, expected_failed = stack_readable(
        [(position, *read_image(path, encoder.transform)) for position, path in enumerate(files.values())])
    assert positions == expected_positions and failed == expected_failed
    assert {type(reason) for reason in failed.values()} == {type(r) for r in expected_failed.values()}
    assert pixels.device.type == torch.device(device).type and pixels.dtype == torch.uint8
    difference = (pixels.cpu().int() - expected.int()).abs().float()
    assert difference.mean() < 2.5
    ours, theirs = encoder.encode_image_batch(pixels), reference.encode_image_batch(expected)
    assert _cosines(ours, theirs).min() >= 0.999
    assert _cosines(ours[:-1], theirs[1:]).max() < 0.99  # other images: the check can tell them apart


def test_decoding_on_a_device_agrees_with_the_cpu_path(feed_vit, feed_scenes, tmp_path):
    """torchvision's decoder on the CPU stands in for nvJPEG here: everything but the decoding device is the same."""
    files = _files(tmp_path / "files", feed_scenes)
    _agrees_with_the_cpu_path(feed_vit, feed_vit, files, "cpu")
    positions, _, failed = _decode_on("cpu", feed_vit.transform, files)
    names = list(files)
    assert sorted(names[p] for p in failed) == ["missing", "truncated"]
    assert sorted(names[p] for p in positions) == ["cmyk", "photo", "png", "rotated", "scrambled", "second"]


def test_large_batches_are_decoded_a_slice_at_a_time(feed_vit, feed_scenes, monkeypatch):
    import percept.encoders.device_decode as device_decode

    calls = []
    decode = device_decode.decode_jpegs
    monkeypatch.setattr(device_decode, "decode_jpegs", lambda data, device: calls.append(len(data))
                        or decode(data, device))
    monkeypatch.setattr(device_decode, "DECODE_PIXELS", 2 * 640 * 480)
    files = dict(enumerate(feed_scenes))
    positions, pixels, failed = _decode_on("cpu", feed_vit.transform, files)
    assert calls == [2, 2, 2] and positions == list(range(6)) and not failed
    monkeypatch.setattr(device_decode, "DECODE_PIXELS", 1 << 27)
    assert torch.equal(_decode_on("cpu", feed_vit.transform, files)[1], pixels)


def test_the_cpu_feed_reads_on_the_cpu_path_and_prefetches_nothing(feed_vit, feed_scenes):
    feed = feed_for(feed_vit)
    assert feed.load is None and feed.collate is stack_readable
    assert feed.read(feed_scenes[0])[0].dtype == torch.uint8
    batches = [([0], torch.zeros(1, 3, 2, 2, dtype=torch.uint8), {})]
    assert list(feed.batches(batches)) == batches
    assert device_decoder(feed_vit.transform, "cpu") is None


def test_the_prefetcher_loads_ahead_and_hands_over_in_order():
    loaded: list[int] = []
    ahead_of_the_first = threading.Event()

    def load(batch):
        loaded.append(batch)
        if batch == 1:
            ahead_of_the_first.set()
        return batch * 10, torch.full((2,), batch)

    results = []
    for number, (value, tensor) in enumerate(prefetched(range(7), load, "cpu", ahead=2)):
        if number == 0:  # batch 1 is loaded while the consumer still holds batch 0
            assert ahead_of_the_first.wait(timeout=60)
        assert len(loaded) <= number + 1 + 2 + 1  # held, queued, and the one waiting to be queued
        results.append((value, tensor.tolist()))
    assert results == [(n * 10, [n, n]) for n in range(7)]
    assert loaded == list(range(7))
    assert list(prefetched([], load, "cpu")) == []


def test_the_prefetcher_raises_an_error_where_its_batch_was_due_and_stops_when_left():
    def load(batch):
        if batch == 3:
            raise ValueError("batch 3 is bad")
        return batch

    got = []
    with pytest.raises(ValueError, match="batch 3 is bad"):
        for value in prefetched(range(6), load, "cpu"):
            got.append(value)
    assert got == [0, 1, 2]

    def endless():
        number = 0
        while True:
            yield number
            number += 1

    stream = prefetched(endless(), lambda batch: batch, "cpu")
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # the loading thread ends with it
    assert not any(thread.name == "percept-prefetch" for thread in threading.enumerate())


def test_encode_image_paths_on_the_cpu_is_unchanged_by_the_feed(feed_vit, feed_scenes, tmp_path):
    files = _files(tmp_path / "files", feed_scenes)
    vectors, failed = pipeline.encode_image_paths(feed_vit, list(files.values()), batch_size=3, num_workers=0)
    reads = [read_image(path, feed_vit.transform) for path in files.values()]
    expected = np.concatenate([feed_vit.encode_image_batch(torch.stack([t for t, _ in reads[start:start + 3]
                                                                        if t is not None]))
                               for start in range(0, len(reads), 3)])  # batches as the feed makes them
    np.testing.assert_array_equal(vectors, expected)
    assert failed == {position: reason for position, (tensor, reason) in enumerate(reads) if tensor is None}


def test_ray_read_tasks_ship_8_bit_pixels_that_the_actor_encodes_as_the_local_engine(feed_vit, feed_scenes,
                                                                                     tmp_path):
    transform = resolve_model(VIT, "random", "fp32", "torch", "cpu").load_transform()
    paths = [*feed_scenes[:3], tmp_path / "missing.jpg", feed_scenes[3]]
    batch = {"position": np.arange(5), "path": np.array([str(p) for p in paths], dtype=object)}
    read = read_pixels(batch, transform, pixel_shape(transform))
    assert pixel_dtype(transform) == np.uint8 and read["pixels"].dtype == np.uint8
    assert read["pixels"][0].nbytes == 3 * 224 * 224 == 150_528  # float32 would be 602,112 bytes
    assert list(read["unreached"]) == [False, False, False, True, False]
    for row in (0, 1, 2, 4):
        assert torch.equal(torch.from_numpy(read["pixels"][row]), read_image(paths[row], transform)[0])
    actor = EncodeBatches(resolve_model(VIT, "random", "fp32", "torch", "cpu"), "cpu", read_in_actor=False)
    encoded = actor({**read})
    local, failed = pipeline.encode_image_paths(feed_vit, paths, num_workers=0)
    np.testing.assert_array_equal(encoded["vector"][[0, 1, 2, 4]], local)
    assert encoded["reason"][3] == failed[3]
    assert pixel_dtype(resolve_model("percept:tiny").load_transform()) == np.float32


@pytest.mark.ray
def test_the_ray_driver_prepares_images_without_loading_the_model(ray_cluster, feed_scenes, tmp_path,
                                                                  monkeypatch):
    from percept.engines import ray as ray_engine

    local = pipeline.encode_images(feed_scenes[0].parent, tmp_path / "local", "percept:tiny", quiet=True)

    def refuse(self):
        raise AssertionError("the driver built the model")

    monkeypatch.setattr(pipeline.LazyEncoder, "get", refuse)
    stream = ray_engine.image_stream(ray_engine.Actors(1, "cpu", read_in_actor=False), batch_size=2)
    on_ray = pipeline.encode_images(feed_scenes[0].parent, tmp_path / "ray", "percept:tiny", quiet=True,
                                    stream=stream)
    np.testing.assert_array_equal(on_ray.vectors, local.vectors)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_feed_decodes_jpeg_files_on_the_gpu_as_the_cpu_path_does(feed_vit, feed_scenes, tmp_path):
    files = _files(tmp_path / "files", feed_scenes)
    del files["scrambled"]  # garbage data: libjpeg and nvJPEG may make different garbage of it
    on_gpu = load_encoder(VIT, "random", "cuda", "fp32", "torch")
    feed = feed_for(on_gpu)
    assert feed.describe == "JPEG files decoded on the GPU, prefetched"
    _agrees_with_the_cpu_path(on_gpu, feed_vit, files, "cuda")
    vectors, failed = pipeline.encode_image_paths(on_gpu, list(files.values()), batch_size=4, num_workers=2)
    reference, reference_failed = pipeline.encode_image_paths(feed_vit, list(files.values()), num_workers=0)
    assert failed == reference_failed and _cosines(vectors, reference).min() >= 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_default_precision_from_jpeg_files_agrees_with_float32_on_the_cpu(feed_vit, feed_scenes):
    on_gpu = load_encoder(VIT, "random", "cuda", "auto", "torch")
    assert on_gpu.precision == "fp16"
    vectors, failed = pipeline.encode_image_paths(on_gpu, feed_scenes, batch_size=4, num_workers=0)
    reference, _ = pipeline.encode_image_paths(feed_vit, feed_scenes, num_workers=0)
    assert not failed and _cosines(vectors, reference).min() >= 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_prefetcher_copies_pinned_batches_on_a_second_stream():
    host = [([n], torch.full((2, 3, 4, 4), n, dtype=torch.uint8).pin_memory(), {}) for n in range(5)]
    streams = []

    def load(batch):
        streams.append(torch.cuda.current_stream())
        return to_device(batch, "cuda")

    got = list(prefetched(host, load, "cuda"))
    assert all(stream != torch.cuda.current_stream() for stream in streams)
    for (positions, pixels, failed), (want_positions, want, _) in zip(got, host):
        assert positions == want_positions and pixels.is_cuda and torch.equal(pixels.cpu(), want) and not failed

