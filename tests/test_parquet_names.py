"""The pyarrow-free reader of a metadata file's names equals pyarrow on the files pandas and pyarrow write."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from percept.data.embeddings import read_embeddings, read_names, write_part
from percept.data.parquet_names import Unsupported, read_string_column, snappy_decompress


def names(n, seed=0):
    return [f"/data/city/{seed}_{i:06d}_x{i % 4}.jpg" for i in range(n)]


@pytest.mark.parametrize("compression", ["snappy", "none"])
@pytest.mark.parametrize("dictionary", [True, False])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_equals_pyarrow(tmp_path, compression, dictionary, version):
    table = pa.table({"image_path": names(5000), "other": list(range(5000))})
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, compression=compression, use_dictionary=dictionary, data_page_version=version,
                   row_group_size=1700, data_page_size=4096)
    assert read_string_column(path, "image_path") == table.column("image_path").to_pylist()


def test_nulls_and_pandas_files(tmp_path):
    path = tmp_path / "m.parquet"
    pd.DataFrame({"caption": ["a", None, "ccc" * 50, "", "é"] * 300}).to_parquet(path, index=True)
    assert read_string_column(path, "caption") == pq.read_table(path).column("caption").to_pylist()


def test_read_embeddings_without_metadata_gives_the_same_names(tmp_path):
    import numpy as np

    for part in range(2):
        write_part(tmp_path, "img", part, np.eye(3, 4)[[0, 1, 2] * 10],
                   pd.DataFrame({"image_path": names(30, part)}))
    full, light = read_embeddings(tmp_path), read_embeddings(tmp_path, metadata=False)
    assert light.names == full.names and light.metadata is None
    assert (light.vectors == full.vectors).all()


def test_other_files_fall_back_to_pyarrow(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_path": names(100)}), path, compression="zstd")
    with pytest.raises(Unsupported):
        read_string_column(path, "image_path")
    assert read_names(path, "image_path") == names(100)


def test_snappy_overlapping_copies():
    # "abcd" then a copy of 11 bytes from offset 4 (overlapping its own output)
    data = bytes([15, 3 << 2]) + b"abcd" + bytes([((11 - 4) << 2) | 1, 4])
    assert snappy_decompress(data) == b"abcdabcdabcdabc"
