"""The ``lci`` command, above the layers it dispatches to (``lci`` → ``trainables`` → ``study``
→ ``analysis``): see :mod:`lci_study.cli`. ``python -m lci_study ...`` is ``lci ...``."""
