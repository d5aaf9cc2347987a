"""Reliability: a Parquet catalog whose column name is not valid UTF-8 (one damaged byte in the
footer), or whose photocalib metadata is broken JSON, is refused by read_catalog with an
InputError naming the file (not UnicodeDecodeError/JSONDecodeError). Found by test_rel_fuzz.py."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from photocalib.errors import InputError
from photocalib.fit import read_catalog, write_catalog


def test_damaged_column_name_is_input_error(tmp_path):
    path = tmp_path / "cat.parquet"
    write_catalog(Table({"x": np.arange(5.0), "instflux": np.arange(5.0) + 1}), path)
    data = bytearray(path.read_bytes())
    i = data.find(b"\x18\x08instflux")  # the column's name in the footer's schema
    assert i > 0
    data[i + 2] = 0xFF
    path.write_bytes(bytes(data))
    try:
        read_catalog(path)
    except InputError as exc:
        assert str(path) in str(exc)


@pytest.mark.parametrize("meta", [b'{"units": {', b"\xff\xfe", b""])
def test_damaged_photocalib_metadata_is_input_error(tmp_path, meta):
    # The JSON block read_catalog restores units from (a damaged byte in the file's base64
    # ARROW:schema decodes to broken JSON: the fuzzer found JSONDecodeError/UnicodeDecodeError).
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "cat.parquet"
    table = pa.table({"x": np.arange(5.0)}).replace_schema_metadata({b"photocalib": meta})
    pq.write_table(table, path)
    with pytest.raises(InputError) as info:
        read_catalog(path)
    assert str(path) in str(info.value)
