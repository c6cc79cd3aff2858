"""Backbones (trunks), the SwAV head, the model config and the function that builds a model from it."""

from openseer.models.backbone import build_backbone, feature_dim
from openseer.models.build import build_model, load_state_checked, random_model
from openseer.models.config import ModelConfig
from openseer.models.head import SwAVHead, SwAVModel
from openseer.models.regnet import REGNETY, build_regnety

__all__ = [
    "REGNETY",
    "ModelConfig",
    "SwAVHead",
    "SwAVModel",
    "build_backbone",
    "build_model",
    "build_regnety",
    "feature_dim",
    "load_state_checked",
    "random_model",
]
