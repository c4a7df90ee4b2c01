"""`matching` evaluator: VAT pre-training's objectives, deterministically, on a split.

No momentum model and no queue: per example, VAC is the in-batch InfoNCE of the online embeddings
and VAM the matching cross-entropy of the true pair and the HARDEST in-batch negatives (see
`pretrain_eval`); the report gives their split means, vam_accuracy and loss = vac_loss + vam_loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from avjax.evaluators.base import EVALUATORS, Evaluator
from avjax.models import vat_objectives as L
from avjax.models.outputs import ModelOutput


def pretrain_eval(model: nnx.Module, output: ModelOutput, valid: jax.Array
                  ) -> dict[str, jax.Array]:
  """Deterministic per-example objectives on one eval batch (no momentum model, no queue).

  VAC: in-batch InfoNCE (alpha 0) of the online embeddings, padding columns excluded.
  VAM: the true pair and the HARDEST in-batch negatives (argmax of the similarity instead of a
  draw), averaged over the 3 pairs (over the true pair alone when the batch has one real example).
  Returns {'vac_loss', 'vam_loss', 'vam_accuracy'}: (B,) each.
  """
  a, v = output.embeddings["audio"], output.embeddings["visual"]
  temp = jnp.clip(model.temperature(), *L.TEMPERATURE_RANGE)
  real = valid > 0
  b = a.shape[0]
  eye = jnp.eye(b, dtype=bool)
  sims = {"a2v": a @ v.T / temp, "v2a": v @ a.T / temp}
  sims = {k: jnp.where(real[None, :], s, -jnp.inf) for k, s in sims.items()}
  diag = lambda s: jnp.diagonal(jax.nn.log_softmax(s, axis=-1))
  vac = -0.5 * (diag(sims["a2v"]) + diag(sims["v2a"]))
  hardest = lambda s: jnp.argmax(jnp.where(eye, -jnp.inf, s), axis=-1)
  audio, visual, labels = L.matching_pairs(output.tokens["audio"], output.tokens["visual"],
                                           hardest(sims["a2v"]), hardest(sims["v2a"]))
  logits = model.match(audio, visual)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  has_neg = (jnp.sum(real) > 1).astype(jnp.float32)
  weights = jnp.stack([jnp.ones(()), has_neg, has_neg])[:, None]  # (3, 1)
  per_pair = lambda x: jnp.sum(weights * x.reshape(3, b), 0) / jnp.sum(weights)
  return {"vac_loss": vac, "vam_loss": per_pair(ce), "vam_accuracy": per_pair(hit)}


@EVALUATORS.register("matching")
class Matching(Evaluator):
  """VAC / VAM of a contrastive pre-training model (capability 'embeddings')."""

  requires = frozenset({"embeddings", "tokens"})

  def outputs(self, model, batch, output):
    return pretrain_eval(model, output, batch["valid"])

  def report(self, predictions):
    report = {k: float(np.mean(predictions[k])) for k in ("vac_loss", "vam_loss", "vam_accuracy")}
    report["loss"] = report["vac_loss"] + report["vam_loss"]
    return report
