"""Per-epoch evaluation runs on the device and reads its results back in one copy."""
import torch

from lci.config import TrainConfig
from lci.trainer import Trainer

READS = ("cpu", "item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def counting_reads(calls):
    from benchmarks.step_cost import recording_readbacks

    return recording_readbacks(calls, READS)


def test_epoch_evaluation_reads_back_once():
    tr = Trainer(TrainConfig.from_dict(dict(dataset="digits", method="lci", epochs=2,
                                            eval_train=True, val_fraction=0.1, device="cpu",
                                            seed=0)))
    first = tr.train_epoch()  # the first evaluation also caches which labels are noisy
    calls = []
    with counting_reads(calls):
        metrics = tr.evaluate()
    # test, robust test, val, noise rate, train-set fit, C and predictions: one copy to the
    # host (.cpu()), then a view of it as numpy
    assert calls == ["cpu", "numpy"], calls
    assert set(metrics) == set(first) - {"epoch", "loss", "lr", "epoch_s", "samples_per_s"} - {
        k for k in first if k.startswith("loss_")}
    assert 0.0 <= metrics["test_acc"] <= 1.0 and 0.0 <= metrics["conf_auroc"] <= 1.0
    assert tr._last_eval["pred"].dtype.kind == "i"
