"""What a molecule VAE learned: held-out reconstruction through the posterior mean, and the KL each level carries.

For every held-out molecule the finest level's posterior means are decoded (MGVAE.decode, edge probabilities
calibrated for the training BCE's positive weight) and compared with the input:

  exact            canonical SMILES of the argmax decode (no correction) equals the input's
  exact_corrected  the same after the valence-correcting decoder (decode.decode_corrected, fragments joined)
  valid            the argmax decode is one valid molecule (validity of reconstructions without correction)
  bond_auc         ROC AUC of the edge probabilities over the molecule's atom pairs (bond vs no bond), averaged over
                   molecules that have both (scikit-learn)
  topk_precision   of the k most probable atom pairs, k = the molecule's bond count, the share that are bonds
  node_accuracy    argmax node type on the molecule's real atoms; slot_accuracy on every slot ("no atom" included)
  bond_type_accuracy  argmax bond type on the true bonds
  kl_nats / kl_bits   the KL of each encoded level (bottom-up) per molecule, as trained (posterior vs prior)
  missed_bonds_mean, extra_bonds_mean   per molecule, bonds the argmax decode leaves out / adds (at edge_threshold)
  overflow_slots_mean, molecules_with_overflow   finest-level slots a bounded cluster left out of the local encoders
  overflow_atoms_mean, molecules_with_overflowed_atoms   the same for real atoms only

Pairs are scored over the true molecule's atoms (pairs with a "no atom" slot are left out of the AUC: they are the
node head's job). Everything is per molecule and then averaged, so one large molecule does not weigh more.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import numpy as np

from mgvae_jax import graphs
from mgvae_jax import vae
from mgvae_jax.chem import decode
from mgvae_jax.chem import featurise


def make_reconstructor(model: vae.MGVAE, edge_pos_weight: float = 1.0):
  """A jitted `fn(params, batch) -> (probabilities dict, kl [B, levels], overflow [B, N])`: decode(posterior means),
  the KL, and which finest-level slots overflowed their cluster."""

  @jax.jit
  def fn(params, batch: graphs.GraphBatch):
    variables = {"params": params}
    out = model.apply(variables, batch, train=False, edge_pos_weight=edge_pos_weight)
    z = out.hierarchy.levels[0].posterior_mean  # [B, N, d]
    # A decoder that reads ranks gets the encoded molecule's, as in training.
    positions = vae.decoder_positions(model.config, batch)
    probs = model.apply(variables, z, 0, edge_pos_weight, positions, method=vae.MGVAE.decode)
    return probs, out.kl, out.hierarchy.levels[0].slots.overflow

  return fn


def _pair_scores(edge_prob: np.ndarray, adjacency: np.ndarray, atoms: np.ndarray) -> tuple[float, float]:
  """(AUC, top-k precision) of one molecule's edge probabilities [N, N] over its real atom pairs i < j."""
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top

  idx = np.flatnonzero(atoms)
  iu = np.triu_indices(idx.size, 1)
  scores = edge_prob[np.ix_(idx, idx)][iu]
  truth = adjacency[np.ix_(idx, idx)][iu] > 0
  bonds = int(truth.sum())
  if bonds == 0 or bonds == truth.size:
    return math.nan, (1.0 if bonds else math.nan)
  auc = float(sk_metrics.roc_auc_score(truth, scores))
  top = np.argsort(-scores, kind="stable")[:bonds]
  return auc, float(truth[top].mean())


def reconstruction_metrics(model: vae.MGVAE, params, batch: graphs.GraphBatch, smiles: Sequence[str],
                           featuriser: featurise.Featuriser, *, edge_pos_weight: float = 1.0,
                           edge_threshold: float = 0.5, batch_size: int = 250, reconstructor=None,
                           keep_examples: int = 0) -> dict:
  """Reconstruction of held-out molecules (host arrays `batch` [M, ...], their SMILES) as a JSON-ready dict.

  `reconstructor`: a `make_reconstructor(model, edge_pos_weight)` to reuse its compilation. `keep_examples`: how many
  (input, reconstruction) SMILES pairs to return under "examples" (for reconstruction.png).
  """
  m = int(batch.nodes.shape[0])
  if m != len(smiles):
    raise ValueError(f"reconstruction_metrics: {m} featurised molecules but {len(smiles)} SMILES")
  if m == 0:
    raise ValueError("reconstruction_metrics: no molecules to reconstruct")
  fn = reconstructor or make_reconstructor(model, edge_pos_weight)
  no_atom = featuriser.no_atom
  t = featuriser.num_types
  probs, kl, overflow = graphs.map_in_chunks(lambda b: fn(params, b), batch, batch_size)
  # kl [M, levels]; overflow [M, N]: finest-level slots left out of a full cluster
  raw = decode.decode_samples(probs, featuriser, corrected=False, edge_threshold=edge_threshold)
  fixed = decode.decode_samples(probs, featuriser, corrected=True, edge_threshold=edge_threshold, connect=True)
  targets = [featurise.canonical_smiles(s) for s in smiles]
  types = np.asarray(batch.nodes)[..., :t].argmax(-1)  # [M, N]
  atoms = types != no_atom
  adjacency = np.asarray(batch.edges).sum(-1)  # [M, N, N]
  pred_types = probs["node"].argmax(-1)
  aucs, tops = [], []
  for i in range(m):
    auc, top = _pair_scores(probs["edge"][i], adjacency[i], atoms[i])
    aucs.append(auc)
    tops.append(top)
  real_pairs = atoms[:, :, None] & atoms[:, None, :] & ~np.eye(atoms.shape[1], dtype=bool)  # [M, N, N]
  predicted = probs["edge"] > edge_threshold
  missed = (real_pairs & (adjacency > 0) & ~predicted).sum((1, 2)) / 2  # [M]
  extra = (real_pairs & (adjacency == 0) & predicted).sum((1, 2)) / 2
  on_bond = adjacency > 0
  bond_types = np.asarray(batch.edges).argmax(-1)
  pred_bond_types = probs["edge_type"].argmax(-1)
  exact = np.array([r.valid and r.smiles == s for r, s in zip(raw, targets)])
  exact_fixed = np.array([r.valid and r.smiles == s for r, s in zip(fixed, targets)])
  result = {
      "molecules": m,
      "exact": float(exact.mean()),
      "exact_corrected": float(exact_fixed.mean()),
      "valid": float(np.mean([r.valid for r in raw])),
      "bond_auc": _nanmean(aucs),
      "topk_precision": _nanmean(tops),
      "node_accuracy": float((pred_types == types)[atoms].mean()),
      "slot_accuracy": float((pred_types == types).mean()),
      "bond_type_accuracy": float((pred_bond_types == bond_types)[on_bond].mean()) if on_bond.any() else None,
      "kl_nats": [float(x) for x in kl.mean(0)],
      "kl_bits": [float(x / math.log(2.0)) for x in kl.mean(0)],
      # Bounded cluster capacity: slots (atoms or "no atom") with no latent, which the decoder cannot place.
      "missed_bonds_mean": float(missed.mean()),
      "extra_bonds_mean": float(extra.mean()),
      "overflow_slots_mean": float(overflow.sum(-1).mean()),
      "molecules_with_overflow": float(overflow.any(-1).mean()),
      "overflow_atoms_mean": float((overflow & atoms).sum(-1).mean()),
      "molecules_with_overflowed_atoms": float((overflow & atoms).any(-1).mean()),
  }
  if keep_examples:
    result["examples"] = [(smiles[i], fixed[i].smiles) for i in range(min(keep_examples, m))]
  return result


def _nanmean(values: Sequence[float]) -> Optional[float]:
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else None
