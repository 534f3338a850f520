"""Compatibility re-export: the real-world sets moved to :mod:`lci.data.realworld` and the
file-backed images and loaders to :mod:`lci.data.imagefiles`."""
from .data.imagefiles import (EVAL_BATCH, EpochBatches, ImageFiles, decode_image,  # noqa: F401
                              eval_loader, train_loader)
from .data.realworld import (CLOTHING_CLASSES, CLOTHING_STATS, IMAGENET_STATS,  # noqa: F401
                             WEBVISION_CLASSES, WEBVISION_JITTER, check_files_exist,
                             load_clothing1m, load_webvision)
