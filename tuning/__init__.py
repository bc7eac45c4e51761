"""Training data and training: curated examples (store, cleaning, splits, import/export,
dataset versions) and training jobs. The only package that imports trl."""

from .curation import Curation, open_curation  # noqa: F401
