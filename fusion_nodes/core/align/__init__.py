"""Time alignment: DTW stream matching with online clock-offset estimation (pure numpy/numba)."""

from fusion_nodes.core.align.aligner import AlignedFrame, AlignerConfig, Match, StreamAligner
from fusion_nodes.core.align.offset import OffsetEstimate

__all__ = ['AlignedFrame', 'AlignerConfig', 'Match', 'OffsetEstimate', 'StreamAligner']
