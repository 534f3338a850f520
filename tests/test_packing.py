"""Trial packing: two trials asking for half a GPU each share one GPU (Ray's fractional
resources), on a real multi-node Ray made by ``ray.cluster_utils.Cluster`` with a fake GPU."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent('''
    import json, logging, sys, tempfile
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster
    from trainables import make_trainable

    gpu = float(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
    space = {"dataset": "digits", "method": "gce", "epochs": 6, "device": "cpu",
             "eval_train": False, "checkpoint_every": 0, "seed": tune.grid_search([0, 1])}
    grid = tune.Tuner(make_trainable(cpu=1, gpu=gpu), param_space=space,
                      run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0)).fit()
    spans = []
    for r in grid:
        df = r.metrics_dataframe
        spans.append((float(df["timestamp"].min() - df["time_this_iter_s"].iloc[0]),
                      float(df["timestamp"].max())))
    print(json.dumps({"errors": grid.num_errors, "spans": spans}))
    ray.shutdown()
    cluster.shutdown()
''')


def _spans(gpu):
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(gpu)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["errors"] == 0
    return sorted(out["spans"])


def test_half_gpu_trials_share_one_gpu():
    (a0, a1), (b0, b1) = _spans(0.5)
    assert b0 < a1, "two gpu=0.5 trials on one GPU should run at the same time"


def test_whole_gpu_trials_queue_for_the_one_gpu():
    """The control: asking for a whole GPU each, the same two trials run one after the other."""
    (a0, a1), (b0, b1) = _spans(1.0)
    assert b0 >= a1 - 0.5, "two gpu=1 trials cannot share the one GPU"
