"""What every trial does, fused or not: its config split into the run's and the study's
labels, its CPU share, the GPU it was given checked, its one-line error and its run files
written to the trial folder."""
from __future__ import annotations

import math
import os
import socket
from typing import Any, Dict, Mapping, Optional, Tuple

from ray import tune

from lci.config import TrainConfig
from lci.errors import LCIError
from lci.names import ERROR_FILE, FUSED_KEY
from lci.outputs import RUN_FILES

#: Config keys a study adds to every trial besides the TrainConfig fields. They label the trial
#: in ``params.json`` (for analysis/) and are stripped before ``TrainConfig.from_dict``;
#: ``fused_seeds`` makes the trial train those seeds as one fused network.
TRIAL_EXTRA_KEYS = ("cell", "phase", "study", "experiment", FUSED_KEY)


def split_config(config: Mapping[str, Any]) -> Tuple[TrainConfig, Dict[str, Any]]:
    """A trial config -> (TrainConfig, the extra keys). Tune's own ``__trial_index__`` style
    keys and the study's labels are extras; anything else must be a TrainConfig field."""
    fields = set(TrainConfig.field_names())
    extras = {k: v for k, v in config.items()
              if k not in fields and (k in TRIAL_EXTRA_KEYS or k.startswith("__"))}
    train = {k: v for k, v in config.items() if k not in extras}
    return TrainConfig.from_dict(train), extras


def cpu_share() -> int:
    """Whole CPUs this trial asked for (at least 1): the torch thread count."""
    try:
        bundles = tune.get_context().get_trial_resources().bundles
        cpus = sum(b.get("CPU", 0) for b in bundles)
    except Exception:  # not inside a Tune trial (direct call in a test)
        return 0
    return max(1, int(math.floor(cpus))) if cpus else 1


def check_gpus_visible(cfg: TrainConfig) -> None:
    """A trial that Ray gave GPUs must see them in torch; otherwise it would silently train on
    the CPU (a container started without the NVIDIA runtime's variables, a CPU-only torch).
    That recurs on every retry on that node, so it is an :class:`LCIError`: the trial ends at
    once with one line naming the node."""
    import ray

    if cfg.device == "cpu":
        return
    try:
        gpu_ids = ray.get_gpu_ids()
    except Exception:  # not inside a Ray worker (a direct call in a test)
        return
    if not gpu_ids:
        return
    import torch

    if torch.cuda.is_available():
        return
    raise LCIError(
        f"node {socket.gethostname()} ({ray.util.get_node_ip_address()}): Ray gave this trial "
        f"GPU {', '.join(map(str, gpu_ids))} but torch sees no CUDA device "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, "
        f"NVIDIA_VISIBLE_DEVICES={os.environ.get('NVIDIA_VISIBLE_DEVICES')!r}, torch "
        f"{torch.__version__} built for CUDA {torch.version.cuda}); expose the node's GPUs to "
        "its container, or set resources.gpu: 0")


def write_error(reason: str, trial_path: Optional[str] = None) -> None:
    """The one-line reason into ``<trial folder>/error.txt`` in the experiment storage
    (``trial_path``: another trial folder than this trial's, a fused seed's)."""
    try:
        st = tune.get_context().get_storage()
        path = f"{trial_path or st.trial_fs_path}/{ERROR_FILE}"
        with st.storage_filesystem.open_output_stream(path) as fh:
            fh.write((reason + "\n").encode())
    except Exception as e:  # the reason still reaches the driver in the last result
        import warnings

        warnings.warn(f"could not write {ERROR_FILE}: {e}")




def publish_run_files(run_dir: str, trial_path: Optional[str] = None) -> None:
    """Copy the run's files (not the checkpoint) to ``<trial folder>/run/`` in the experiment
    storage, where analysis/ looks for ``label_issues.csv`` (``trial_path``: another trial
    folder than this trial's, a fused seed's). The final checkpoint holds the same files;
    this copy is a convenience, so a failure here only warns."""
    try:
        import pyarrow.fs

        st = tune.get_context().get_storage()
        dest = f"{trial_path or st.trial_fs_path}/run"
        st.storage_filesystem.create_dir(dest, recursive=True)
        for name in RUN_FILES:
            src = os.path.join(run_dir, name)
            if os.path.exists(src):
                pyarrow.fs.copy_files(src, f"{dest}/{name}",
                                      destination_filesystem=st.storage_filesystem)
    except Exception as e:  # a Ray API change or a storage hiccup must not fail the trial
        import warnings

        warnings.warn(f"could not copy the run files to the trial folder: {e}")


def end_on_recurring_error(e: BaseException, epoch: int) -> None:
    """A trial that hit bad input or diverged: a retry would fail the same way, so it ends
    here, with its reason in ``error.txt`` and in its last result (study.trials reads both)."""
    from lci.errors import FAILED_KEY

    reason = f"{type(e).__name__}: {e}"
    write_error(reason)
    tune.report({FAILED_KEY: reason, "epoch": epoch})

