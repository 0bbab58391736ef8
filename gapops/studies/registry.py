"""What a study is (a named set of arms over one swept setting) and the three run sizes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

# Sizes every study starts from; a study's own per-size overrides come after these.
#  tiny : the tests (seconds for a whole study): a smoke test, never a reproduction
#  quick: a laptop CPU, whole `run all --quick` in minutes (10 epochs: trimmed from 15 to keep
#         it under 6 minutes on 2 cores)      full : the GPU size (--device cuda)
SCALES = {
    "tiny": {"data": {"synthetic": {"n": 320}, "digits": {"n": 300}, "info_gap": {"n": 320},
                      "embeddings": {}},
             "model": {"hidden": 32, "embed_dim": 16},
             "train": {"epochs": 2, "batch_size": 64, "max_eval": 64}},
    "quick": {"data": {"synthetic": {"n": 2560}, "digits": {}, "info_gap": {"n": 2560},
                       "embeddings": {}},
              "model": {"hidden": 256, "embed_dim": 32},
              "train": {"epochs": 10, "batch_size": 256, "max_eval": 512}},
    "full": {"data": {"synthetic": {"n": 40000}, "digits": {}, "info_gap": {"n": 40000},
                      "embeddings": {}},
             "model": {"hidden": 512, "embed_dim": 64},
             "train": {"epochs": 40, "batch_size": 1024, "max_eval": 4096},
             # digits has 1,437 training pairs: smaller batches, more epochs
             "train_by_data": {"digits": {"epochs": 100, "batch_size": 256}}},
}


@dataclass
class Arm:
    """One setting of the swept variable: overrides of the study's TrainConfig / ModelConfig /
    data options. ``params`` (what the JSON reports) is all three merged."""
    name: str
    train: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    @property
    def params(self) -> dict:
        return {**self.data, **self.model, **self.train}


@dataclass
class Study:
    """A named experiment: arms trained (or measured) under one base configuration.

    kind: 'train' (each arm trains a model), 'cone' (measures models at initialization),
    'shift' (trains one toy model per seed, each arm evaluates the loss landscape at one τ),
    'embeddings' (measures bundled real embeddings; a seed s > 0 is a random 80% of the pairs)
    or 'real_shift' (the shift landscape of bundled real embeddings; a seed is an order of the
    pairs into batches).
    key: the metric plotted over epochs; bars: the final metrics in the bar chart and table.
    check(arms) reads the arms' per-seed results.
    example: a labelled illustration, never counted as a reproduction.
    sizes: per-size overrides {"quick": {"train": {...}, "model": {...}, "data": {...}}}.
    replicates: per-size number of replicates that replaces ``--seeds`` ({"quick": 100}: the
    Theorem 3.3 study's random inits; init_gap's disjoint folds); unit: what one replicate is.
    check(arms) -> (outcome, verdict, comparisons): outcome 'reproduced', 'contradicted' or
    'inconclusive' (see :mod:`gapops.studies.stats`).
    """
    name: str
    paper: str
    claim: str
    data: str
    arms: list
    check: Callable[[list], tuple]
    kind: str = "train"
    key: str = "gap"
    bars: tuple = ("gap",)
    log_key: bool = False
    train: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    data_kw: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    notes: Optional[str] = None
    example: bool = False
    replicates: dict = field(default_factory=dict)
    unit: str = "seed"

    def resolve(self, scale: str, arm: Arm) -> tuple[dict, dict, dict]:
        """(data kwargs, model overrides, train overrides) for ``arm`` at ``scale``."""
        if scale not in SCALES:
            raise ValueError(f"unknown size {scale!r}; choose one of {list(SCALES)}")
        base, own = SCALES[scale], self.sizes.get(scale, {})
        data = {**base["data"][self.data], **self.data_kw, **own.get("data", {}), **arm.data}
        model = {**base["model"], **self.model, **own.get("model", {}), **arm.model}
        train = {**base["train"], **base.get("train_by_data", {}).get(self.data, {}),
                 **self.train, **own.get("train", {}), **arm.train}
        return data, model, train
