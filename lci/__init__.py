"""Label Confidence Incorporation (Ahn et al., ICCV 2023) as a plain PyTorch library.

``lci.fit(config)`` trains one run; ``lci.TrainConfig`` holds every setting. This package
imports nothing from Ray: the Tune trainables in ``trainables/`` wrap it.
"""
from .config import TrainConfig
from .errors import LCIError

try:  # the version lives in pyproject.toml only
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("lci-study")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "unknown"


def fit(config, out_dir=None, **kwargs):
    """Train one run; see :func:`lci.fitloop.fit` (imported lazily to keep ``import lci`` light)."""
    from .fitloop import fit as _fit

    return _fit(config, out_dir, **kwargs)


__all__ = ["TrainConfig", "LCIError", "fit", "__version__"]
