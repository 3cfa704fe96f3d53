from __future__ import annotations

import gzip
import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import quasineuron.data.mnist as mnist
from quasineuron.data import default_data_root, load_mnist, read_idx

SHARED_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _need_real_mnist() -> Path:
    if not all(
        (SHARED_MNIST / f"{name}.gz").exists() or (SHARED_MNIST / name).exists()
        for name in mnist.MNIST_FILES
    ):
        pytest.skip(f"real MNIST files not found in {SHARED_MNIST} (folder beside the repository)")
    return SHARED_MNIST


def _idx(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.tobytes()


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch) -> dict[str, bytes]:
    """Tiny IDX files (6 train, 4 test images) whose checksums replace the real ones."""
    rng = np.random.Generator(np.random.PCG64(0))
    files = {
        "train-images-idx3-ubyte": _idx(rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": _idx(np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8)),
        "t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": _idx(np.array([9, 8, 7, 6], dtype=np.uint8)),
    }
    for name, data in files.items():
        monkeypatch.setitem(mnist.MNIST_FILES, name, hashlib.sha256(data).hexdigest())
    return files


def _write(folder: Path, files: dict[str, bytes], *, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def test_read_idx_roundtrip_and_errors():
    arr = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    out = read_idx(_idx(arr))
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.int32
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(_idx(arr)[:-1])


def test_loads_raw_and_gzip_files_from_data_dir(tmp_path, fake_mnist):
    raw = {k: v for k, v in fake_mnist.items() if k.startswith("train")}
    gz = {k: v for k, v in fake_mnist.items() if k.startswith("t10k")}
    folder = _write(_write(tmp_path / "m", raw, gz=False), gz, gz=True)
    train, test = load_mnist(folder)
    assert train.x.shape == (6, 784) and test.x.shape == (4, 784)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert test.y.tolist() == [9, 8, 7, 6]
    pixels = np.frombuffer(fake_mnist["train-images-idx3-ubyte"][16:], dtype=np.uint8)
    torch.testing.assert_close(train.x.reshape(-1), torch.from_numpy(pixels / 255).float())


def test_checksum_mismatch_is_a_clear_error(tmp_path, fake_mnist, monkeypatch):
    folder = _write(tmp_path / "m", fake_mnist, gz=True)
    monkeypatch.setitem(mnist.MNIST_FILES, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(ValueError, match="checksum mismatch.*t10k-labels.*Delete it"):
        load_mnist(folder)


def test_missing_file_in_data_dir_names_it(tmp_path, fake_mnist):
    files = dict(fake_mnist)
    files.pop("t10k-images-idx3-ubyte")
    folder = _write(tmp_path / "m", files, gz=True)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(folder)


def test_download_from_a_file_url_then_reuse_the_cache(tmp_path, fake_mnist):
    mirror = _write(tmp_path / "mirror", fake_mnist, gz=True)
    cache = tmp_path / "cache"
    train, _ = load_mnist(cache_dir=cache, mirrors=(mirror.as_uri() + "/",))
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in fake_mnist)
    again, _ = load_mnist(cache_dir=cache, mirrors=((tmp_path / "gone").as_uri(),))
    assert torch.equal(again.x, train.x)


def test_download_skips_a_bad_mirror_and_leaves_no_temp_files(tmp_path, fake_mnist):
    bad = _write(tmp_path / "bad", {k: b"garbage" for k in fake_mnist}, gz=True)
    good = _write(tmp_path / "good", fake_mnist, gz=True)
    cache = tmp_path / "cache"
    train, _ = load_mnist(cache_dir=cache, mirrors=(bad.as_uri(), good.as_uri()))
    assert len(train) == 6
    assert not [p for p in cache.iterdir() if p.suffix == ".part"]


def test_offline_error_says_how_to_use_a_local_copy(tmp_path, fake_mnist, monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(ConnectionError) as info:
        load_mnist(cache_dir=tmp_path / "cache")
    msg = str(info.value)
    for hint in ("network is unreachable", "data_dir=", "--data-dir", "QUASINEURON_DATA"):
        assert hint in msg
    assert not list((tmp_path / "cache").iterdir())


def test_download_false_and_env_var_cache_root(tmp_path, fake_mnist, monkeypatch):
    monkeypatch.setenv("QUASINEURON_DATA", str(tmp_path / "root"))
    assert default_data_root() == tmp_path / "root"
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_mnist(download=False)
    _write(tmp_path / "root" / "mnist", fake_mnist, gz=False)
    train, test = load_mnist(download=False)
    assert (len(train), len(test)) == (6, 4)


@pytest.fixture(scope="module")
def real_mnist():
    return load_mnist(_need_real_mnist())


@pytest.mark.slow
def test_real_mnist_counts_and_mean(real_mnist):
    train, test = real_mnist
    assert train.x.shape == (60000, 784) and test.x.shape == (10000, 784)
    assert torch.bincount(train.y).tolist() == TRAIN_COUNTS
    assert torch.bincount(test.y).tolist() == TEST_COUNTS
    assert abs(train.x.double().mean().item() - 0.1307) < 5e-5
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0


def test_real_mnist_download_verifies_real_checksums(tmp_path):
    mirror = _need_real_mnist()
    train, test = load_mnist(cache_dir=tmp_path, mirrors=(mirror.as_uri(),))
    assert (len(train), len(test)) == (60000, 10000)
