"""The IDX reader: round trips, and a clear DataError naming the file for each broken case."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from lightspeed.errors import DataError
from myproject.idx import read_idx, read_idx_pair, write_idx


def images(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def labels(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n, dtype=np.uint8)


def assert_names(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    """The message is one line, names the file, and says what is wrong."""
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_round_trip_uint8(tmp_path: Path, name: str) -> None:
    x = images()
    path = write_idx(tmp_path / name, x)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = read_idx(path, expect_ndim=3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_wider_types(tmp_path: Path, dtype: type) -> None:
    x = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a.idx", x))
    assert out.dtype == np.dtype(dtype)  # native byte order, whatever the file stores
    np.testing.assert_array_equal(out, x)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    x = labels()
    path = write_idx(tmp_path / "labels-no-suffix", x, compress=True)
    np.testing.assert_array_equal(read_idx(path, expect_ndim=1), x)


def test_pair_round_trip(tmp_path: Path) -> None:
    x, y = images(7), labels(7)
    xi = write_idx(tmp_path / "i.gz", x)
    yi = write_idx(tmp_path / "l.gz", y)
    out_x, out_y = read_idx_pair(xi, yi)
    np.testing.assert_array_equal(out_x, x)
    np.testing.assert_array_equal(out_y, y)


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad-magic"
    raw = bytearray(write_idx(tmp_path / "ok", labels()).read_bytes())
    raw[0] = 0x12  # the leading zero bytes are wrong
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "magic")


def test_unknown_type_code(tmp_path: Path) -> None:
    path = tmp_path / "bad-type"
    path.write_bytes(struct.pack(">HBBI", 0, 0x07, 1, 3) + b"abc")
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "magic")


def test_wrong_ndim(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", labels())
    with pytest.raises(DataError) as err:
        read_idx(path, expect_ndim=3)
    assert_names(err, path, "1 dimensions", "expected 3")


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data(tmp_path: Path, compress: bool) -> None:
    """The payload is short of what the header promises (the archive itself is intact)."""
    full = write_idx(tmp_path / "full", images(), compress=False).read_bytes()
    path = tmp_path / ("short.gz" if compress else "short")
    cut = full[:-100]
    path.write_bytes(gzip.compress(cut) if compress else cut)
    with pytest.raises(DataError) as err:
        read_idx(path, expect_ndim=3)
    assert_names(err, path, "truncated", "(5, 28, 28)")


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short-header"
    path.write_bytes(struct.pack(">HBB", 0, 0x08, 3) + b"\x00\x00\x00\x05")
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "truncated", "header")


def test_too_short_to_be_idx(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "2 bytes")


def test_truncated_gzip(tmp_path: Path) -> None:
    """An interrupted download: the .gz bytes stop part-way through the stream."""
    good = write_idx(tmp_path / "good.gz", images(50)).read_bytes()
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "truncated or corrupt")


def test_corrupt_gzip(tmp_path: Path) -> None:
    good = bytearray(write_idx(tmp_path / "good.gz", images(50)).read_bytes())
    good[20:40] = bytes(20)  # damage the deflate stream after the gzip header
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(good))
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "truncated or corrupt")


def test_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(write_idx(tmp_path / "ok", images()).read_bytes() + b"\x00" * 3)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "trailing bytes", "holds 3923")


def test_count_mismatch(tmp_path: Path) -> None:
    xi = write_idx(tmp_path / "images.gz", images(5))
    yi = write_idx(tmp_path / "labels.gz", labels(4))
    with pytest.raises(DataError) as err:
        read_idx_pair(xi, yi)
    assert_names(err, xi, "5 images", "4 labels")
    assert str(yi) in str(err.value)


def test_images_and_labels_swapped(tmp_path: Path) -> None:
    xi = write_idx(tmp_path / "images.gz", images())
    yi = write_idx(tmp_path / "labels.gz", labels())
    with pytest.raises(DataError) as err:
        read_idx_pair(yi, xi)
    assert_names(err, yi, "swapped")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_names(err, path, "not found")


def test_decoded_cache_is_written_once_and_follows_the_source(tmp_path: Path) -> None:
    x, y = images(6), labels(6)
    xs = write_idx(tmp_path / "x-idx3-ubyte.gz", x)
    ys = write_idx(tmp_path / "y-idx1-ubyte.gz", y)
    cache = tmp_path / "decoded"
    first = read_idx_pair(xs, ys, cache)
    written = sorted(p.name for p in cache.iterdir())
    assert len(written) == 2 and all(n.endswith(".npy") for n in written)
    again = read_idx_pair(xs, ys, cache)
    assert isinstance(again[0], np.memmap)  # the decoded copy, not the gzip file
    for a, b, want in zip(first, again, (x, y), strict=True):
        np.testing.assert_array_equal(a, want)
        np.testing.assert_array_equal(b, want)
    write_idx(xs, images(6, seed=1))  # a changed source gets a new key, never the stale copy
    np.testing.assert_array_equal(read_idx_pair(xs, ys, cache)[0], images(6, seed=1))
    assert len(list(cache.iterdir())) == 3


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path: Path) -> None:
    xs = write_idx(tmp_path / "x-idx3-ubyte", images())
    ys = write_idx(tmp_path / "y-idx1-ubyte", labels())
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    x, _ = read_idx_pair(xs, ys, blocked / "decoded")
    np.testing.assert_array_equal(x, images())
