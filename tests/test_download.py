"""CIFAR-10/100 missing under data_dir are downloaded on first use (``download: auto``), once
per node under a file lock, checked by torchvision's md5; against a local HTTP server
(127.0.0.1) serving archives in the real format, written by test_data's CIFAR writers."""
from __future__ import annotations

import hashlib
import http.server
import os
import tarfile
import threading

import numpy as np
import pytest

from lci.data import check_dataset, clear_cache, load_data
from lci.errors import DataError
from test_data import write_cifar10, write_cifar100

WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


class _Server:
    """Serves the files of ``root`` on 127.0.0.1 and counts the downloads of each path
    (torchvision's redirect probe, a GET with a ``Method: HEAD`` header, is not one)."""

    def __init__(self, root):
        self.gets, lock = {}, threading.Lock()
        gets = self.gets

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                if self.headers.get("Method") != "HEAD":
                    with lock:
                        gets[self.path] = gets.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _archive(tmp_path, dataset):
    """torchvision's archive of ``dataset`` (its folder, tar.gz) with random data; returns
    (archive name, md5, the arrays written)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if dataset == "cifar10" else CIFAR100
    src = tmp_path / "src"
    arrays = WRITERS[dataset](src)
    serve = tmp_path / "serve"
    serve.mkdir()
    with tarfile.open(serve / cls.filename, "w:gz") as tar:
        tar.add(src / cls.base_folder, arcname=cls.base_folder)
    md5 = hashlib.md5((serve / cls.filename).read_bytes()).hexdigest()
    return cls, serve, md5, arrays


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Point torchvision's CIFAR classes at archives on a local server."""
    servers = []

    def serve(dataset, md5=None):
        cls, root, real_md5, arrays = _archive(tmp_path / dataset, dataset)
        server = _Server(root)
        servers.append(server)
        monkeypatch.setattr(cls, "url", server.url(cls.filename))
        monkeypatch.setattr(cls, "tgz_md5", md5 or real_md5)
        return server, "/" + cls.filename, arrays

    yield serve
    for s in servers:
        s.close()


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_missing_cifar_is_downloaded_on_first_use(tmp_path, served, dataset):
    from lci.config import TrainConfig
    from lci.trainer import Trainer

    server, path, (x_tr, y_tr, x_te, y_te, names) = served(dataset)
    data_dir = str(tmp_path / "data")
    cfg = TrainConfig(dataset=dataset, data_dir=data_dir, model="small_cnn", epochs=1,
                      noise="none")
    assert "downloaded on first use" in check_dataset(cfg)  # the dry run's note, no error
    assert server.gets == {}  # the check downloads nothing
    tr = Trainer(cfg, out_dir=str(tmp_path / "run"))  # download: auto, the default
    np.testing.assert_array_equal(tr.data.x_train.numpy().transpose(0, 2, 3, 1), x_tr)
    np.testing.assert_array_equal(tr.data.y_test.numpy(), y_te)
    assert tr.data.class_names == names and server.gets == {path: 1}
    assert check_dataset(cfg) is None  # there now
    clear_cache()
    load_data(dataset, data_dir, download=True)
    assert server.gets == {path: 1}  # found on disk: no second download
    assert not [n for n in os.listdir(data_dir) if n.startswith(f".{dataset}-download-")]


def test_download_false_keeps_the_error(tmp_path, served):
    from lci.config import TrainConfig
    from lci.trainer import Trainer

    server, _, _ = served("cifar10")
    cfg = TrainConfig(dataset="cifar10", data_dir=str(tmp_path / "data"), download=False,
                      model="small_cnn", epochs=1)
    with pytest.raises(DataError, match="missing: data_batch_1"):
        check_dataset(cfg)
    with pytest.raises(DataError, match="missing: data_batch_1"):
        Trainer(cfg, out_dir=str(tmp_path / "run"))
    assert server.gets == {}
    assert TrainConfig(download="false").download is False


def test_an_archive_with_the_wrong_md5_is_refused(tmp_path, served):
    served("cifar10", md5="0" * 32)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=r"md5 expected 0{32}") as e:
        load_data("cifar10", str(data_dir), download=True)
    assert "\n" not in str(e.value)
    # nothing half-done left behind: the next try starts clean
    assert sorted(os.listdir(data_dir)) == [".cifar10.download.lock"]


def _load_in_child(data_dir, url, md5, barrier, out):
    from torchvision.datasets import CIFAR10

    CIFAR10.url, CIFAR10.tgz_md5 = url, md5
    barrier.wait()  # every trial of the node finds the set missing at once
    b = load_data("cifar10", data_dir, download=True)
    out.put(int(b.x_train.sum()))


def test_concurrent_trials_of_a_node_download_once(tmp_path, served):
    import multiprocessing as mp
    from torchvision.datasets import CIFAR10

    server, path, (x_tr, *_) = served("cifar10")
    ctx = mp.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_load_in_child, args=(str(tmp_path / "data"), CIFAR10.url,
                                                      CIFAR10.tgz_md5, barrier, out))
             for _ in range(n)]
    for p in procs:
        p.start()
    sums = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sums == [int(x_tr.sum())] * n
    assert server.gets == {path: 1}


def test_a_checkpoint_from_before_the_download_key_still_resumes(tmp_path):
    """``download`` cannot change results: a run saved without it (or with another value)
    resumes, while a result-changing key still refuses."""
    from lci.checkpoint import check_config
    from lci.config import TrainConfig
    from lci.errors import CheckpointError

    now = TrainConfig(dataset="cifar10", data_dir=str(tmp_path)).resolved().to_dict()
    old = {k: v for k, v in now.items() if k != "download"}
    check_config(old, now, "ckpt")
    check_config({**now, "download": False}, now, "ckpt")
    with pytest.raises(CheckpointError, match="lr"):
        check_config({**old, "lr": 0.5}, now, "ckpt")
