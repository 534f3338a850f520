"""lci.data: loaders read small files written here in the real on-disk formats."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lci.data import DataBundle, clear_cache, load_data, split_validation
from lci.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


# ------------------------------------------------------------------------- CIFAR writers
def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """HWC images -> CIFAR's rows: 3072 bytes, the R plane, then G, then B, each row-major."""
    return images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072)


def _dump(path, obj):
    # String keys: the original files were pickled by Python 2, whose ``str`` keys load as
    # ``str`` with the ``encoding="latin1"`` torchvision uses (they read as b'data' only with
    # encoding="bytes", as on the CIFAR web page). torchvision's own test fakes do the same.
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(root, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    y_train = rng.integers(0, 10, n_train)
    x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    y_test = rng.integers(0, 10, n_test)
    per = n_train // 5
    for b in range(5):
        sl = slice(b * per, (b + 1) * per)
        _dump(os.path.join(folder, f"data_batch_{b + 1}"),
              {"batch_label": f"training batch {b + 1} of 5", "data": _cifar_rows(x_train[sl]),
               "labels": [int(v) for v in y_train[sl]]})
    _dump(os.path.join(folder, "test_batch"),
          {"batch_label": "testing batch 1 of 1", "data": _cifar_rows(x_test),
           "labels": [int(v) for v in y_test]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    _dump(os.path.join(folder, "batches.meta"),
          {"label_names": names, "num_cases_per_batch": per, "num_vis": 3072})
    return x_train, y_train, x_test, y_test, names


def write_cifar100(root, n_train=20, n_test=10, seed=1):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder)
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    y_train = rng.integers(0, 100, n_train)
    x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    y_test = rng.integers(0, 100, n_test)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _dump(os.path.join(folder, name),
              {"data": _cifar_rows(x), "fine_labels": [int(v) for v in y],
               "coarse_labels": [int(v) // 5 for v in y]})
    names = [f"class{i:02d}" for i in range(100)]
    _dump(os.path.join(folder, "meta"),
          {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]})
    return x_train, y_train, x_test, y_test, names


def _as_hwc(t: torch.Tensor) -> np.ndarray:
    return t.numpy().transpose(0, 2, 3, 1)


# ---------------------------------------------------------------------------------- CIFAR
def test_cifar10_round_trips_pixels_labels_and_orientation(tmp_path):
    x_tr, y_tr, x_te, y_te, names = write_cifar10(tmp_path)
    b = load_data("cifar10", str(tmp_path))
    assert isinstance(b, DataBundle) and b.name == "cifar10"
    assert b.x_train.dtype == torch.uint8 and b.x_train.shape == (20, 3, 32, 32)
    assert b.x_test.shape == (10, 3, 32, 32)
    assert b.y_train.dtype == torch.int64
    np.testing.assert_array_equal(_as_hwc(b.x_train), x_tr)
    np.testing.assert_array_equal(_as_hwc(b.x_test), x_te)
    np.testing.assert_array_equal(b.y_train.numpy(), y_tr)
    np.testing.assert_array_equal(b.y_test.numpy(), y_te)
    # orientation: the first stored byte is the top-left red value, the 33rd the next row's
    row = _cifar_rows(x_tr[:1])[0]
    assert b.x_train[0, 0, 0, 0] == row[0] and b.x_train[0, 0, 1, 0] == row[32]
    assert b.x_train[0, 1, 0, 0] == row[1024] and b.x_train[0, 2, 0, 1] == row[2049]
    assert b.num_classes == 10 and b.class_names == names
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.2023, 0.1994, 0.2010)
    assert b.pad == 4 and b.hflip is True
    assert b.y_train_true is None and b.labels_are_noisy is False


def test_cifar100_round_trips(tmp_path):
    x_tr, y_tr, x_te, y_te, names = write_cifar100(tmp_path)
    b = load_data("cifar100", str(tmp_path))
    np.testing.assert_array_equal(_as_hwc(b.x_train), x_tr)
    np.testing.assert_array_equal(_as_hwc(b.x_test), x_te)
    np.testing.assert_array_equal(b.y_train.numpy(), y_tr)  # the fine labels
    np.testing.assert_array_equal(b.y_test.numpy(), y_te)
    assert b.num_classes == 100 and b.class_names == names
    assert b.mean == (0.507, 0.487, 0.441) and b.std == (0.267, 0.256, 0.276)


def test_cifar_missing_folder_says_what_and_where(tmp_path):
    with pytest.raises(DataError) as e:
        load_data("cifar10", str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and "nowhere" in msg
    assert "download: auto" in msg  # load_data downloads only when asked
    with pytest.raises(DataError, match="cifar-100-python"):
        load_data("cifar100", str(tmp_path))


def test_cifar_missing_one_file_and_corrupt_file(tmp_path):
    write_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match="missing: data_batch_3"):
        load_data("cifar10", str(tmp_path))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="torchvision's CIFAR format"):
        load_data("cifar10", str(tmp_path))


# --------------------------------------------------------------------------------- digits
def test_digits_shapes_fixed_split_and_labels():
    b = load_data("digits")
    assert b.x_train.shape == (1797 - 500, 1, 8, 8) and b.x_test.shape == (500, 1, 8, 8)
    assert b.x_train.dtype == torch.uint8 and int(b.x_train.max()) == 255
    assert b.num_classes == 10 and b.pad == 1 and b.hflip is False
    for y in (b.y_train, b.y_test):
        assert y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 9
    # stratified: every class has about 500/10 test images
    assert b.y_test.bincount().min() >= 45
    assert len(b.mean) == 1 and 0 < b.mean[0] < 1 and b.std[0] > 0
    # the split is fixed: a fresh load (not the cache) gives the same images
    clear_cache()
    b2 = load_data("digits")
    assert torch.equal(b.x_test, b2.x_test) and torch.equal(b.y_train, b2.y_train)


def test_load_data_is_memoized():
    a, b = load_data("digits"), load_data("digits")
    assert a.x_train is b.x_train   # loaded once per process
    a.name = "changed"              # bundles are copies: rebinding a field is harmless
    assert load_data("digits").name == "digits"


def test_unknown_and_unimplemented_names():
    with pytest.raises(ConfigError, match="'digits', 'cifar10', 'cifar100'"):
        load_data("mnist")
    with pytest.raises(DataError, match="clothing1m.*does not exist.*noisy_label_kv.txt"):
        load_data("clothing1m", data_dir="no/such/dir")
    with pytest.raises(DataError, match="does not exist"):
        load_data("no/such/file.npz")


# ------------------------------------------------------------------------------------ npz
def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_channels_last_float_and_clean_labels(tmp_path):
    rng = np.random.default_rng(0)
    x_tr = rng.random((12, 16, 16, 3)).astype(np.float32)   # channels-last floats in [0, 1]
    x_te = rng.random((4, 16, 16, 3)).astype(np.float32)
    p = _npz(tmp_path / "d.npz", x_train=x_tr, y_train=np.arange(12) % 3,
             x_test=x_te, y_test=np.array([0, 1, 2, 4]))
    b = load_data(p)
    assert b.x_train.shape == (12, 3, 16, 16) and b.x_train.dtype == torch.uint8
    np.testing.assert_array_equal(b.x_train.numpy(),
                                  np.round(x_tr * 255).astype(np.uint8).transpose(0, 3, 1, 2))
    assert b.num_classes == 5  # max label over both splits + 1
    assert b.labels_are_noisy is False and b.y_train_true is None
    assert b.pad == 2 and b.hflip is True
    # mean/std from x_train in [0, 1] units
    ref = b.x_train.double() / 255
    np.testing.assert_allclose(b.mean, ref.mean((0, 2, 3)).numpy(), atol=1e-9)
    np.testing.assert_allclose(b.std, ref.std((0, 2, 3), unbiased=False).numpy(), atol=1e-9)


def test_npz_with_true_labels_is_already_noisy(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)  # NCHW
    p = _npz(tmp_path / "d.npz", x_train=x, y_train=[0, 1, 1, 0, 2, 2],
             y_train_true=[0, 1, 0, 0, 2, 1], x_test=x[:2, 0], y_test=[0, 2])  # test as [N,H,W]
    b = load_data(p)
    assert b.labels_are_noisy is True
    assert b.y_train_true.tolist() == [0, 1, 0, 0, 2, 1]
    assert b.y_train.tolist() == [0, 1, 1, 0, 2, 2]
    assert torch.equal(b.x_train, torch.from_numpy(x)) and b.x_test.shape == (2, 1, 8, 8)
    assert b.num_classes == 3 and b.pad == 1


def test_npz_malformed_inputs_name_the_problem(tmp_path):
    x = np.zeros((4, 8, 8), dtype=np.uint8)
    ok = dict(x_train=x, y_train=[0, 1, 0, 1], x_test=x, y_test=[0, 1, 0, 1])
    cases = [
        ({k: v for k, v in ok.items() if k != "y_test"}, "missing array.*y_test"),
        ({**ok, "y_train": [0, -1, 0, 1]}, "y_train has a negative label"),
        ({**ok, "y_train": [0, 1, 0]}, "x_train has 4 images but y_train has 3 labels"),
        ({**ok, "y_test": [0.5, 1, 0, 1]}, "y_test holds non-integer values"),
        ({**ok, "x_train": np.zeros((0, 8, 8), np.uint8), "y_train": np.zeros(0, int)},
         "x_train is empty"),
        ({**ok, "x_test": np.full((4, 8, 8), 2.0)}, r"x_test is float with values in \[2, 2\]"),
        ({**ok, "x_test": np.zeros((4, 3, 9, 9), np.uint8)}, "x_train images are"),
        ({**ok, "y_train_true": [0, 1]}, "y_train_true has 2 labels"),
    ]
    for i, (arrays, pattern) in enumerate(cases):
        p = _npz(tmp_path / f"bad{i}.npz", **arrays)
        with pytest.raises(DataError, match=pattern):
            load_data(p)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot be read as a .npz"):
        load_data(str(tmp_path / "junk.npz"))


# ---------------------------------------------------------------------- csv and folders
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _png(path, color, size=(8, 6)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_csv_file_list_with_split_column(tmp_path):
    rows = ["path,label,split"]
    for i in range(9):
        _png(tmp_path / "img" / f"{i}.png", COLORS[i % 3])
        rows.append(f"img/{i}.png,{i % 3},{'test' if i >= 6 else 'train'}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    b = load_data(str(tmp_path / "list.csv"), num_workers=2)
    assert b.x_train.shape == (6, 3, 6, 8) and b.x_test.shape == (3, 3, 6, 8)  # [N, C, H, W]
    assert b.y_train.tolist() == [0, 1, 2, 0, 1, 2] and b.y_test.tolist() == [0, 1, 2]
    for img, y in zip(b.x_train, b.y_train):
        assert tuple(img[:, 0, 0].tolist()) == COLORS[int(y)]  # decoded pixels, RGB order
    assert b.num_classes == 3 and b.pad == 1 and b.hflip is True


def test_csv_without_split_holds_out_20_percent_and_names_classes(tmp_path):
    rows = ["path,label"]
    for i in range(20):
        # grey and differently sized images: converted to RGB and resized to 32x32
        img = Image.new("L", (10 + i, 12), 40 * (i % 2))
        img.save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'cat' if i % 2 else 'dog'}")
    (tmp_path / "list.csv").write_text("\n".join(rows))
    a = load_data(str(tmp_path / "list.csv"))
    assert a.x_test.shape == (4, 3, 32, 32) and a.x_train.shape == (16, 3, 32, 32)
    assert a.class_names == ["cat", "dog"] and a.num_classes == 2
    assert sorted(a.y_test.tolist()) == [0, 0, 1, 1]  # stratified
    clear_cache()
    b = load_data(str(tmp_path / "list.csv"), num_workers=3)  # fixed split, parallel decode
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)


def test_csv_errors_name_file_and_line(tmp_path):
    _png(tmp_path / "a.png", COLORS[0])
    (tmp_path / "l.csv").write_text("path,label\na.png,0\nmissing.png,1\n")
    with pytest.raises(DataError, match=r"missing\.png.*line 3"):
        load_data(str(tmp_path / "l.csv"))
    (tmp_path / "neg.csv").write_text("path,label\na.png,0\na.png,-2\n")
    with pytest.raises(DataError, match="line 3 has the negative label -2"):
        load_data(str(tmp_path / "neg.csv"))
    (tmp_path / "hdr.csv").write_text("file,class\na.png,0\n")
    with pytest.raises(DataError, match="path,label"):
        load_data(str(tmp_path / "hdr.csv"))
    (tmp_path / "split.csv").write_text("path,label,split\na.png,0,train\na.png,0,valid\n")
    with pytest.raises(DataError, match="line 3 has split 'valid'"):
        load_data(str(tmp_path / "split.csv"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "img.csv").write_text("path,label\na.png,0\nbad.png,1\n")
    with pytest.raises(DataError, match=r"bad\.png.*line 3.*cannot be read as an image"):
        load_data(str(tmp_path / "img.csv"))


def test_image_folder_with_train_and_test(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for c, color in zip(("b_cls", "a_cls"), COLORS):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.jpg" if i else tmp_path / split / c / f"{i}.png",
                     color, size=(16, 16))
    b = load_data(str(tmp_path))
    assert b.class_names == ["a_cls", "b_cls"]  # sorted names -> ids
    assert b.x_train.shape == (6, 3, 16, 16) and b.x_test.shape == (2, 3, 16, 16)
    assert b.y_train.tolist() == [0, 0, 0, 1, 1, 1] and b.y_test.tolist() == [0, 1]
    # png is lossless: class a_cls (green) is exactly green
    assert b.x_test[0, :, 5, 5].tolist() == [0, 255, 0]
    assert b.pad == 2


def test_image_folder_single_level_and_errors(tmp_path):
    for c in ("x", "y"):
        for i in range(5):
            _png(tmp_path / "flat" / c / f"{i}.png", COLORS[i % 3])
    b = load_data(str(tmp_path / "flat"))
    assert len(b.y_train) == 8 and len(b.y_test) == 2 and b.num_classes == 2
    os.makedirs(tmp_path / "only_train" / "train" / "x")
    with pytest.raises(DataError, match="no test/"):
        load_data(str(tmp_path / "only_train"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="no class folders"):
        load_data(str(tmp_path / "empty"))


# ------------------------------------------------------------------------ split_validation
def test_split_validation_disjoint_covering_seeded():
    tr, va = split_validation(100, 0.2, seed=3)
    assert len(va) == 20 and len(tr) == 80
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(100))
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()  # sorted
    tr2, va2 = split_validation(100, 0.2, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, split_validation(100, 0.2, seed=4)[1])
    tr0, va0 = split_validation(10, 0.0, seed=0)
    assert va0.size == 0 and tr0.tolist() == list(range(10))
    assert len(split_validation(10, 0.01, seed=0)[1]) == 1  # a positive fraction holds out one
    with pytest.raises(ConfigError):
        split_validation(10, 1.0, seed=0)


def test_cache_follows_file_changes_and_npz_options(tmp_path):
    x = np.zeros((4, 8, 8), dtype=np.uint8)
    p = _npz(tmp_path / "d.npz", x_train=x, y_train=[0, 1, 0, 1], x_test=x, y_test=[0, 1, 0, 1])
    assert load_data(p).num_classes == 2
    _npz(tmp_path / "d.npz", x_train=x, y_train=[0, 1, 0, 2], x_test=x, y_test=[0, 1, 0, 1],
         class_names=np.array(["a", "b", "c", "d"]), hflip=False)
    os.utime(p, ns=(1, 1))  # a different mtime for sure, however coarse the file system clock
    b = load_data(p)
    assert b.num_classes == 4 and b.class_names == ["a", "b", "c", "d"] and b.hflip is False


# ---------------------------------------------------------------------- declared classes
def _npz_set(path, y_train, y_test, **extra):
    x_tr = np.zeros((len(y_train), 8, 8), dtype=np.uint8)
    x_te = np.zeros((len(y_test), 8, 8), dtype=np.uint8)
    return _npz(path, x_train=x_tr, y_train=np.array(y_train), x_test=x_te,
                y_test=np.array(y_test), **extra)


def test_npz_training_label_beyond_the_test_labels_is_refused(tmp_path):
    # a label above every test label would add a phantom class that noise then fills
    p = _npz_set(tmp_path / "d.npz", [0, 1, 0, 3], [0, 1, 0, 1])
    with pytest.raises(DataError, match=r"d\.npz.*y_train\[3\] has label 3; labels must be in "
                                        r"\[0, 2\) \(the test labels' range"):
        load_data(p)
    p = _npz_set(tmp_path / "t.npz", [0, 1, 0, 1], [0, 1, 0, 1], y_train_true=[0, 1, 2, 1])
    with pytest.raises(DataError, match=r"y_train_true\[2\] has label 2.*\[0, 2\)"):
        load_data(p)


def test_npz_num_classes_key_declares_the_classes(tmp_path):
    b = load_data(_npz_set(tmp_path / "ok.npz", [0, 1, 0, 3], [0, 1, 0, 1], num_classes=4))
    assert b.num_classes == 4 and b.y_train.tolist() == [0, 1, 0, 3]
    with pytest.raises(DataError, match=r"bad\.npz.*y_train\[3\] has label 3; labels must be "
                                        r"in \[0, 3\) \(num_classes"):
        load_data(_npz_set(tmp_path / "bad.npz", [0, 1, 0, 3], [0, 1, 0, 1], num_classes=3))
    with pytest.raises(DataError, match=r"y_test\[1\] has label 2.*\[0, 2\)"):
        load_data(_npz_set(tmp_path / "t.npz", [0, 1], [0, 2], num_classes=2))
    with pytest.raises(DataError, match="class_names has 3 names but num_classes is 2"):
        load_data(_npz_set(tmp_path / "n.npz", [0, 1], [0, 1], num_classes=2,
                           class_names=np.array(["a", "b", "c"])))
    with pytest.raises(DataError, match="num_classes must be one positive integer"):
        load_data(_npz_set(tmp_path / "z.npz", [0, 1], [0, 1], num_classes=0))


def test_npz_class_count_far_beyond_the_images_is_refused(tmp_path):
    # label 5,000,000 would build a 5-million-way output layer for 8 images
    p = _npz_set(tmp_path / "huge.npz", [0, 1, 0, 5_000_000], [0, 1, 0, 5_000_000])
    with pytest.raises(DataError, match=r"huge\.npz.*label 5000000.*5000001 classes for 8 "
                                        r"images.*\[0, 8\)") as e:
        load_data(p)
    assert "\n" not in str(e.value)
    p = _npz_set(tmp_path / "key.npz", [0, 1], [0, 1], num_classes=5_000_000)
    with pytest.raises(DataError, match=r"key\.npz.*num_classes.*5000000 classes for 4 images"):
        load_data(p)


def _csv_set(tmp_path, name, rows, header="path,label,split"):
    _png(tmp_path / "a.png", COLORS[0])
    (tmp_path / name).write_text("\n".join([header] + rows) + "\n")
    return str(tmp_path / name)


def test_csv_training_label_beyond_the_test_labels_is_refused(tmp_path):
    p = _csv_set(tmp_path, "l.csv", ["a.png,0,train", "a.png,1,train", "a.png,4,train",
                                     "a.png,0,test", "a.png,1,test"])
    with pytest.raises(DataError, match=r"l\.csv.*line 4 has label 4; labels must be in "
                                        r"\[0, 2\) \(the test labels' range"):
        load_data(p)


def test_csv_class_count_far_beyond_the_images_is_refused(tmp_path):
    p = _csv_set(tmp_path, "l.csv", ["a.png,0", "a.png,1", "a.png,5000000"], header="path,label")
    with pytest.raises(DataError, match=r"l\.csv.*line 4.*label 5000000.*5000001 classes for "
                                        r"3 images"):
        load_data(p)


def test_image_folder_empty_class_folder_is_named(tmp_path):
    for c in ("cat", "dog"):
        for split in ("train", "test"):
            _png(tmp_path / "two" / split / c / "0.png", COLORS[0])
    os.makedirs(tmp_path / "two" / "train" / "eel")
    (tmp_path / "two" / "train" / "eel" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*train.*eel.* holds no images"):
        load_data(str(tmp_path / "two"))
    os.makedirs(tmp_path / "flat" / "cat")
    _png(tmp_path / "flat" / "dog" / "0.png", COLORS[1])
    with pytest.raises(DataError, match=r"class folder .*flat.*cat.* holds no images"):
        load_data(str(tmp_path / "flat"))


def test_npz_class_names_declare_the_classes(tmp_path):
    names = np.array(["a", "b", "c"])
    b = load_data(_npz_set(tmp_path / "ok.npz", [0, 2], [0, 1], class_names=names))
    assert b.num_classes == 3 and b.class_names == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"y_train\[1\] has label 3; labels must be in \[0, 3\) "
                                        r"\(the 3 entries of class_names"):
        load_data(_npz_set(tmp_path / "bad.npz", [0, 3], [0, 1], class_names=names))
    for bad in (np.inf, 2.5, np.array([2, 3])):
        with pytest.raises(DataError, match="num_classes must be one positive integer"):
            load_data(_npz_set(tmp_path / "nc.npz", [0, 1], [0, 1], num_classes=bad))
