"""Weights out of openseer (safetensors, TorchScript, ONNX), and the typed configs of the import-weights / export
commands (:mod:`openseer.interop.config`; the commands themselves are in :mod:`openseer.cli.interop`).

Reading every kind of weights file (openseer run folders and checkpoints, safetensors, VISSL/SEER and timm files)
is :mod:`openseer.weights`' job; this package writes them for other tools.
"""
