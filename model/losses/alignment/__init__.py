"""Temporal alignment losses between videos of the same task: TCC, LAV, VAVA and GTCC (``LOSSES``), and the
soft-DTW, Sinkhorn and discretised-GMM pieces they are built from."""
from model.losses.alignment.gtcc import GTCCLoss
from model.losses.alignment.lav import LAVLoss
from model.losses.alignment.sinkhorn import sinkhorn_log
from model.losses.alignment.soft_dtw import soft_dtw
from model.losses.alignment.tcc import TCCLoss
from model.losses.alignment.vava import VAVALoss

__all__ = ["GTCCLoss", "LAVLoss", "TCCLoss", "VAVALoss", "sinkhorn_log", "soft_dtw"]
