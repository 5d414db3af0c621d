"""Hotline as a drop-in embedding module for a user's own training loop (docs/training.md):
:class:`HotlineEmbeddingBagCollection`, :class:`SparseFeatures` (``KeyedJaggedTensor``-like
input), and the embedding optimizers :class:`EmbeddingSGD` and :class:`RowWiseAdagrad`."""

from .collection import (BOUNDS_CHECK_MODES, PLACEMENT_MODES, POOLING_MODES, EmbeddingBagConfig,
                         HotlineEmbeddingBagCollection, MicroBatch)
from .features import InputMajor, SparseFeatures
from .optim import EmbeddingSGD, RowWiseAdagrad, make_optimizer

__all__ = ["BOUNDS_CHECK_MODES", "PLACEMENT_MODES", "POOLING_MODES", "EmbeddingBagConfig",
           "HotlineEmbeddingBagCollection", "MicroBatch", "InputMajor", "SparseFeatures",
           "EmbeddingSGD", "RowWiseAdagrad", "make_optimizer"]
