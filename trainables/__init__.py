"""Ray Tune trainables that wrap lci's fit loop: reporting, checkpoint/restore, resources."""
from .lci_trainable import make_trainable, train_lci
from .trial import TRIAL_EXTRA_KEYS, split_config

__all__ = ["TRIAL_EXTRA_KEYS", "make_trainable", "split_config", "train_lci"]
