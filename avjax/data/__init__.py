"""Input pipelines: TFDS sources -> grain transforms -> per-host numpy batches."""

from avjax.data.pipeline import (EpochPlan, PlanStore, Subset, eval_batches, make_transform,
                                 shuffled_plan, steps_per_epoch, train_batches)
from avjax.data.sources import Dataset, DatasetNotBuiltError, open_dataset

__all__ = ["EpochPlan", "PlanStore", "Subset", "eval_batches", "make_transform", "shuffled_plan",
           "steps_per_epoch", "train_batches", "Dataset", "DatasetNotBuiltError", "open_dataset"]
