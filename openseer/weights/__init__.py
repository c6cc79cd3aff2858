"""One way in for weights: every file any command or the Python API takes becomes a :class:`Weights`.

:func:`load_weights` reads an openseer run folder (single-file or sharded checkpoints), a ``ckpt-*.pt`` (pretraining,
linear probe or fine-tuning), a safetensors file written by ``openseer import-weights`` / ``openseer export``,
and the SEER/VISSL and timm checkpoints that ``import-weights`` reads (converted on the fly), checking every key
and shape. A :class:`Weights` carries the tensors in openseer's layout, the config of the architecture and the
:class:`~openseer.data.preprocess.Preprocess` its inputs need.
"""

from openseer.weights.core import Weights, finish_import, report_unknown
from openseer.weights.files import (
    CLASSIFIER_KIND,
    fold_batchnorm,
    is_classifier_state,
    load_weights,
    read_torch_file,
    save_weights,
    write_classifier,
)

__all__ = [
    "CLASSIFIER_KIND",
    "Weights",
    "finish_import",
    "fold_batchnorm",
    "is_classifier_state",
    "load_weights",
    "read_torch_file",
    "report_unknown",
    "save_weights",
    "write_classifier",
]
