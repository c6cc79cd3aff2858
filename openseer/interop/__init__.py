"""Weights out of openseer (safetensors, TorchScript, ONNX) and the import-weights / export commands.

Reading every kind of weights file (openseer run folders and checkpoints, safetensors, VISSL/SEER and timm files)
is :mod:`openseer.weights`' job; this package writes them for other tools.
"""
