"""The modality-gap studies: offline data, tiny two-tower models, a thin loop on the fused loss.

    python -m gapops.studies list
    python -m gapops.studies run swap --quick

or from Python: ``gapops.studies.run_study("swap", scale="quick")``. See docs/studies.md for the
papers' claims and docs/studies.md for what we measured. Only gapops' public API is used.
"""
from .configs import STUDIES
from .data import PairedData, digits, info_gap, mismatch_pairs, synthetic
from .loop import TrainConfig, evaluate, train
from .models import ModelConfig, TwoTower, build_model
from .registry import SCALES, Arm, Study
from .runner import format_table, get_study, run_study

__all__ = ["STUDIES", "SCALES", "Arm", "Study", "PairedData", "synthetic", "info_gap", "digits",
           "mismatch_pairs", "ModelConfig", "TwoTower", "build_model", "TrainConfig", "train",
           "evaluate", "get_study", "run_study", "format_table"]
