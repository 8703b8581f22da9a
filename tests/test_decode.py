"""percept.data.decode: limits refused from the header alone, EXIF orientation, every pixel format to 8-bit RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_fixtures import (
    blank_bilevel_png,
    encode,
    exif_rotated_jpeg,
    header_only_png,
    sixteen_bit_grey_png,
    sixteen_bit_rgb_png,
    street,
    upright_png_of_jpeg,
)
from PIL import Image

from percept.data.decode import (
    ImageError,
    ImageLimits,
    ImageTooLarge,
    ImageUnsupported,
    check_size,
    open_image,
    read_header,
)


def pixels(data, **kwargs) -> np.ndarray:
    image = open_image(data, **kwargs)
    assert image.mode == "RGB"
    return np.asarray(image)


@pytest.mark.parametrize("width,height,error,words", [
    (8, 4_999_999, ImageTooLarge, "no side may be longer than 20000"),
    (39_000_000, 1, ImageTooLarge, "no side may be longer than 20000"),
    (7000, 6000, ImageTooLarge, r"\(42.0 megapixels\): at most 40 megapixels"),
    (20_000, 999, ImageUnsupported, "aspect ratio of 20:1"),
    (19_000, 900, ImageUnsupported, "aspect ratio of 21:1: at most 20:1"),
])
def test_limits_are_checked_on_the_header_before_any_pixel(width, height, error, words):
    data = header_only_png(width, height)  # pixel data is garbage: decoding would fail differently
    with pytest.raises(error, match=words):
        read_header(data, name="the upload")
    with pytest.raises(error, match=words):
        open_image(data, name="the upload")


def test_the_limits_themselves_are_accepted():
    check_size(8000, 5000, ImageLimits(), "x")  # exactly 40 megapixels
    check_size(20_000, 1000, ImageLimits(), "x")  # exactly 20:1, longest side exactly 20,000
    assert read_header(header_only_png(400, 20)).width == 400


def test_tiny_files_declaring_huge_images():
    thin = blank_bilevel_png(8, 4_999_999)
    line = blank_bilevel_png(39_000_000, 1)
    assert len(thin) < 10_000 and len(line) < 10_000
    for data in (thin, line):
        with pytest.raises(ImageTooLarge):
            open_image(data)


def test_byte_limit_empty_missing_and_foreign_files(tmp_path):
    data = encode(Image.fromarray(street()), "PNG")
    with pytest.raises(ImageTooLarge, match=f"is {len(data)} bytes: at most 100 bytes"):
        open_image(data, ImageLimits(max_bytes=100))
    with pytest.raises(ImageError, match="is empty"):
        open_image(b"")
    with pytest.raises(ImageError, match="does not exist"):
        open_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageUnsupported, match="not an image this tool reads"):
        open_image(tmp_path / "notes.png")
    with pytest.raises(ImageUnsupported):  # a format that is never handed to a decoder
        open_image(encode(Image.fromarray(street()), "PPM"))
    with pytest.raises(ImageError, match="truncated or corrupt"):
        open_image(data[: len(data) // 2])


@pytest.mark.parametrize("orientation,turn", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(orientation, turn):
    jpeg = exif_rotated_jpeg(street(), orientation)
    with Image.open(io.BytesIO(jpeg)) as stored:
        as_stored = np.asarray(stored.convert("RGB"))
    upright = pixels(jpeg)
    np.testing.assert_array_equal(upright, np.rot90(as_stored, turn))
    np.testing.assert_array_equal(upright, pixels(upright_png_of_jpeg(jpeg)))


def test_sixteen_bit_is_scaled_not_clipped():
    grey = street()[..., 0]
    np.testing.assert_array_equal(pixels(sixteen_bit_grey_png(grey)), np.repeat(grey[..., None], 3, axis=2))
    rgb = street(seed=1)
    np.testing.assert_array_equal(pixels(sixteen_bit_rgb_png(rgb)), rgb)
    wide = Image.fromarray(np.array([[0, 1000, 40000, 65535]], dtype=np.int32))  # a 32-bit "I" TIFF
    assert pixels(encode(wide, "TIFF"))[0, :, 0].tolist() == [0, 4, 156, 255]


def test_float_is_clipped_to_zero_one():
    values = np.array([[-0.5, 0.0, 0.2, 0.5, 1.0, 3.0, np.nan]], dtype=np.float32)
    assert pixels(encode(Image.fromarray(values), "TIFF"))[0, :, 0].tolist() == [0, 0, 51, 128, 255, 255, 0]


def test_cmyk_palette_alpha_greyscale_and_bilevel():
    assert pixels(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))[0, 0].tolist() == [255, 0, 0]
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    palette.putpixel((0, 0), 1)
    assert pixels(encode(palette, "PNG"))[0, :2].tolist() == [[200, 30, 40], [0, 0, 0]]
    assert pixels(encode(palette, "PNG", transparency=0))[0, :2].tolist() == [[200, 30, 40], [255, 255, 255]]
    assert pixels(encode(palette, "GIF", transparency=0))[0, :2].tolist() == [[200, 30, 40], [255, 255, 255]]
    half = Image.new("RGBA", (2, 2), (0, 0, 200, 128))
    assert pixels(encode(half, "PNG"))[0, 0].tolist() == [127, 127, 227]
    assert pixels(encode(Image.new("LA", (2, 2), (40, 255)), "PNG"))[0, 0].tolist() == [40, 40, 40]
    grey = street()[..., 1]
    np.testing.assert_array_equal(pixels(encode(Image.fromarray(grey), "PNG"))[..., 2], grey)
    bilevel = Image.new("1", (3, 1))
    bilevel.putpixel((1, 0), 1)
    assert pixels(encode(bilevel, "PNG"))[0, :, 0].tolist() == [0, 255, 0]


def test_files_and_bytes_read_the_same(tmp_path):
    jpeg = exif_rotated_jpeg(street(), 6)
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    np.testing.assert_array_equal(pixels(tmp_path / "photo.jpg"), pixels(jpeg))
