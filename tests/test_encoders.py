"""Encoders: model names, the built-in offline models, open_clip and Hugging Face back ends,
clear messages for missing weights, and the external clip-retrieval command."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from percept.encoders import (
    encode_pil_images,
    load_encoder,
    open_clip_backend,
    parse_model_name,
    resolve_model,
)
from percept.encoders.external import (
    clip_retrieval_command,
    external_available,
    run_clip_retrieval,
)
from percept.errors import PerceptError

TINY_OPEN_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _noise_image(seed: int = 0, size=(48, 32)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("name, backend, arch, tag", [
    ("percept:tiny", "percept", "tiny", None),
    ("percept:small", "percept", "small", None),
    ("open_clip:ViT-B-32", "open_clip", "ViT-B-32", None),
    ("open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip", "ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-B/32", "open_clip", "ViT-B-32", "openai"),
    ("ViT-L/14@336px", "open_clip", "ViT-L-14-336", "openai"),
    ("RN50", "open_clip", "RN50", "openai"),
    ("hf_clip:openai/clip-vit-base-patch32", "hf_clip", "openai/clip-vit-base-patch32", None),
])
def test_model_names_follow_clip_retrieval(name, backend, arch, tag):
    parsed = parse_model_name(name)
    assert (parsed.backend, parsed.arch, parsed.tag) == (backend, arch, tag)


@pytest.mark.parametrize("name", ["ViT-B-32", "percept:huge", "open_clip:", "open_clip:a/b/c", "hf_clip:x", "clip"])
def test_unknown_model_name_lists_the_accepted_forms(name):
    with pytest.raises(PerceptError) as error:
        resolve_model(name)
    message = str(error.value)
    assert repr(name) in message
    for form in ("percept:tiny", "open_clip:ARCH/TAG", "hf_clip:ORG/NAME", "ViT-L/14@336px"):
        assert form in message


def test_unknown_open_clip_architecture_suggests_close_ones():
    with pytest.raises(PerceptError, match="ViT-B-32"):
        resolve_model("open_clip:ViT-B-23")


def test_tiny_model_is_deterministic_and_pinned():
    first, second = load_encoder("percept:tiny"), load_encoder("percept:tiny")
    images = [_noise_image(0), _noise_image(1, size=(20, 64))]
    texts = ["greenspace count (within buffer of size 100m) is 9", ""]
    a, b = encode_pil_images(first, images), encode_pil_images(second, images)
    assert a.dtype == np.float32 and a.shape == (2, 64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.encode_texts(texts), second.encode_texts(texts))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(first.encode_texts(texts), axis=1), 1, atol=1e-6)
    # Pinned: any change to the built-in weights or arithmetic must bump its version.
    assert first.weights_id == "builtin:percept:tiny:v1"
    np.testing.assert_allclose(a[0, :4], PINNED_IMAGE, atol=1e-5)
    np.testing.assert_allclose(first.encode_texts(texts[:1])[0, :4], PINNED_TEXT, atol=1e-5)


PINNED_IMAGE = [0.033344, 0.043899, -0.083368, -0.049297]
PINNED_TEXT = [0.005247, 0.250760, 0.119557, -0.011996]


def test_tiny_text_tower_puts_similar_texts_close():
    encoder = load_encoder("percept:tiny")
    vectors = encoder.encode_texts(["shops count is 3", "shops count is 4", "median speed is 50"])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_builtin_model_takes_no_pretrained(tmp_path):
    with pytest.raises(PerceptError, match="built in"):
        resolve_model("percept:tiny", pretrained=str(tmp_path))


def test_missing_open_clip_weights_give_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr(open_clip_backend, "hub_file", lambda repo, name: None)
    monkeypatch.setattr(open_clip_backend, "URL_CACHE", tmp_path)
    with pytest.raises(PerceptError) as error:
        resolve_model("ViT-B/32")
    message = str(error.value)
    assert "ViT-B/32" in message and "timm/vit_base_patch32_clip_224.openai" in message
    assert str(tmp_path / "ViT-B-32.pt") in message
    assert "never downloaded" in message and "--pretrained PATH" in message and "Hugging Face cache" in message


def test_missing_pretrained_file_is_named(tmp_path):
    missing = tmp_path / "weights.safetensors"
    with pytest.raises(PerceptError, match="weights.safetensors for open_clip:ViT-B-32 does not exist"):
        resolve_model("open_clip:ViT-B-32", pretrained=str(missing))
    with pytest.raises(PerceptError, match="holds no checkpoint"):
        resolve_model("open_clip:ViT-B-32", pretrained=str(tmp_path))


def test_missing_hf_weights_give_one_clear_message(monkeypatch):
    from percept.encoders import hf_backend

    monkeypatch.setattr(hf_backend, "hub_snapshot", lambda repo: None)
    with pytest.raises(PerceptError, match="openai/clip-vit-base-patch32.*never downloaded.*--pretrained PATH"):
        resolve_model("hf_clip:openai/clip-vit-base-patch32")


def test_unknown_open_clip_tag_lists_the_known_ones():
    with pytest.raises(PerceptError, match="laion2b_s34b_b79k"):
        resolve_model("open_clip:ViT-B-32/nonsense")


@pytest.fixture(scope="module")
def enc_open_clip_checkpoint(tmp_path_factory):
    """A tiny open_clip architecture and a checkpoint of its (random) weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip")
    config = folder / "PerceptTestTiny.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(1)
    model = open_clip.create_model("PerceptTestTiny")
    checkpoint = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
    return checkpoint


def test_open_clip_checkpoint_file_or_folder(enc_open_clip_checkpoint):
    from percept.encoders.weights import file_sha256

    by_file = load_encoder("open_clip:PerceptTestTiny", pretrained=str(enc_open_clip_checkpoint))
    by_folder = load_encoder("open_clip:PerceptTestTiny", pretrained=str(enc_open_clip_checkpoint.parent))
    assert by_file.weights_id == by_folder.weights_id == file_sha256(enc_open_clip_checkpoint)
    assert by_file.dim == 24
    images = encode_pil_images(by_file, [_noise_image(0), _noise_image(2)])
    np.testing.assert_array_equal(images, encode_pil_images(by_folder, [_noise_image(0), _noise_image(2)]))
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    texts = by_file.encode_texts(["a street with trees", "a busy road"])
    assert texts.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_open_clip_random_initialisation_is_seeded():
    first = resolve_model("open_clip:PerceptTestTiny", pretrained="random")
    assert first.weights_id == "random:open_clip:PerceptTestTiny:torch-seed-0"
    a, b = first.load(), first.load()
    np.testing.assert_array_equal(encode_pil_images(a, [_noise_image(3)]), encode_pil_images(b, [_noise_image(3)]))


def test_hf_clip_from_a_local_folder(tmp_path):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 4, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=8)
    CLIPModel(config).save_pretrained(tmp_path)
    encoder = load_encoder("hf_clip:example/tiny-clip", pretrained=str(tmp_path))
    assert encoder.dim == 8 and encoder.weights_id.startswith("sha256:")
    images = encode_pil_images(encoder, [_noise_image(0), _noise_image(1)])
    texts = encoder.encode_texts(["a b", "b"])
    assert images.shape == (2, 8) and texts.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(np.vstack([images, texts]), axis=1), 1, atol=1e-5)


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_external_command_line_matches_the_original():
    assert clip_retrieval_command("in", "out", "ViT-B/32", "--batch_size 16  --num_prepro_workers 2") == [
        "clip-retrieval", "inference", "--input_dataset", "in", "--output_folder", "out", "--clip_model", "ViT-B/32",
        "--batch_size", "16", "--num_prepro_workers", "2"]
    assert clip_retrieval_command("in", "out", "m", None)[-2:] == ["--clip_model", "m"]


def test_external_command_missing_or_failing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not external_available()
    with pytest.raises(PerceptError, match="not on PATH.*--encoder builtin"):
        run_clip_retrieval(tmp_path, tmp_path / "out", "ViT-B/32", None)
    _script(tmp_path, "clip-retrieval", "exit 3\n")
    assert external_available()
    with pytest.raises(PerceptError, match="exit status 3"):
        run_clip_retrieval(tmp_path, tmp_path / "out", "ViT-B/32", None)


def test_external_command_receives_the_flags(monkeypatch, tmp_path):
    log = tmp_path / "args.txt"
    _script(tmp_path, "clip-retrieval", f'printf "%s\\n" "$@" > {log}\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    run_clip_retrieval("images", tmp_path / "out", "open_clip:ViT-B-32", "--enable_text False")
    assert log.read_text().split("\n")[:-1] == [
        "inference", "--input_dataset", "images", "--output_folder", str(tmp_path / "out"),
        "--clip_model", "open_clip:ViT-B-32", "--enable_text", "False"]
