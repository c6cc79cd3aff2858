"""One way in for weights: every file any command or the Python API takes becomes a :class:`Weights`.

:func:`load_weights` reads an openseer run folder (single-file or sharded checkpoints), a ``ckpt-*.pt`` (pretraining,
linear probe or fine-tuning), a safetensors file written by ``openseer import-weights`` / ``openseer export``,
and the SEER/VISSL and timm checkpoints that ``import-weights`` reads (converted on the fly), checking every key
and shape. A :class:`Weights` carries the tensors in openseer's layout and the network's description
(:mod:`openseer.weights.description`): its architecture and head (``model``) and the
:class:`~openseer.data.preprocess.Preprocess` its inputs need, never a training recipe (that of the run the weights
came from travels beside, as a plain dict, for provenance).

Weights sit below training in the package's layers, so that pretraining can start from any weights file through
this one loader; reading a run needs its config only as plain data.
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
