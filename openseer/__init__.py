"""openseer: self-supervised visual pretraining in the manner of SEER (SwAV on RegNetY)."""

__version__ = "0.1.0"
