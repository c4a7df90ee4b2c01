"""`baseline`: joint training of all modalities with cross-entropy on the fused logits."""

from avjax.methods.base import METHODS, Method

METHODS.register("baseline")(Method)
