"""The .npz reader of model files: the arrays numpy wrote, in every layout, and damage refused."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from percept.model.npz import read_npz


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {"vecs": rng.standard_normal((300, 64)), "scores": rng.uniform(1, 5, 300),
            "half": rng.standard_normal((7, 3)).astype(np.float16), "bytes": np.frombuffer(b'{"k": 40}', np.uint8),
            "fortran": np.asfortranarray(rng.standard_normal((5, 9)).astype(np.float32)),
            "empty": np.empty((0, 64)), "scalar": np.array(2.5)}


@pytest.mark.parametrize("save", [np.savez_compressed, np.savez], ids=["deflated", "stored"])
def test_reads_every_array_as_numpy_wrote_it(tmp_path, save):
    path = tmp_path / "model.npz"
    want = arrays()
    save(path, **want)
    got = read_npz(path)
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array)
    assert not got["vecs"].flags.writeable  # views of the inflated bytes, never changed in place


def test_an_empty_archive_has_no_arrays(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)
    assert read_npz(path) == {}


def damaged_copy(tmp_path, offset_from_data: int) -> tuple:
    """A compressed model file with one byte of the largest member's data flipped."""
    path = tmp_path / "model.npz"
    np.savez_compressed(path, vecs=np.random.default_rng(1).standard_normal((200, 32)))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("vecs.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + int.from_bytes(
        data[info.header_offset + 28:info.header_offset + 30], "little")
    data[start + offset_from_data] ^= 0x55
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.parametrize("where", [40, 2000, 9000])
def test_damaged_member_data_is_refused(tmp_path, where):
    """Flipped bits in the deflated data: either the stream breaks or the CRC-32 disagrees."""
    with pytest.raises((zipfile.BadZipFile, ValueError)):
        read_npz(damaged_copy(tmp_path, where))


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    np.savez_compressed(path, vecs=np.ones((50, 8)))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:-120])
    with pytest.raises((zipfile.BadZipFile, ValueError, EOFError)):
        read_npz(truncated)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(zipfile.BadZipFile):
        read_npz(text)


def test_object_arrays_and_wrong_lengths_are_refused(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, names=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="Python objects"):
        read_npz(pickled)
    short = tmp_path / "short.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (4,)})
    with zipfile.ZipFile(short, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + np.ones(3).tobytes())  # 3 values for a shape of (4,)
    with pytest.raises(ValueError, match="bytes of data"):
        read_npz(short)
