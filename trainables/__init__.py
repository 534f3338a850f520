"""Ray Tune trainables that wrap lci's fit loop: reporting, checkpoint/restore, resources."""
from .lci_trainable import TRIAL_EXTRA_KEYS, make_trainable, split_config, train_lci

__all__ = ["TRIAL_EXTRA_KEYS", "make_trainable", "split_config", "train_lci"]
