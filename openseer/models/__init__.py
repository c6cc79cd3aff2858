"""Backbones (trunks) and the SwAV head."""

from openseer.models.backbone import build_backbone, feature_dim
from openseer.models.head import SwAVHead, SwAVModel
from openseer.models.regnet import REGNETY, build_regnety

__all__ = ["REGNETY", "SwAVHead", "SwAVModel", "build_backbone", "build_regnety", "feature_dim"]
