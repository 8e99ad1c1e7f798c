"""fAIrytale: turn a story into an illustrated children's picture book.

The data path is the package layout: ``story`` (reading) → ``pages`` → ``characters`` /
``scenes`` → ``plan`` (the editable book plan) → ``render`` (pictures) → ``pdf``.
Models are named and loaded in one place, :mod:`fairytale.registry`.
"""

__version__ = "0.1.0"
