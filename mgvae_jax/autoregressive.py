"""Autoregressive MGN decoding of molecules (paper section 5.1, "Autoregressive", after CGVAE), with static shapes.

Given node latents z [N, d] (sampled independently per node), node types are predicted per node; then a graph is
built from a start node in breadth-first order. The nodes already reached form a queue; the front of the queue is
the focus f. Each step either adds a bond of type b between f and a node u (in the graph: a ring closure; outside
it: u joins the graph and the queue) or stops f (f is closed and the focus moves on). Construction ends when the
queue is exhausted. Each step's choice is a softmax over the N x E bond choices plus "stop", computed from a
second-order (pair) state H [N, N, F] that a gated recurrence (GRU) updates at every step with one second-order MGN
message-passing layer over the current partial graph (A_t (x) H_{t-1}, Example 3.10), so every earlier decision
informs the next.

Valence-aware masking: a bond of order k between f and u is offered only if both have k of their valence left (the
valence caps of `chem.decode.MAX_VALENCE`), u is a real atom, not closed, not f and not bonded to f yet. So every
partial graph, and the final molecule, is chemically possible and connected.

Everything is a pure function of a `BuildState` of fixed-size arrays and runs as one `lax.scan` (via `nn.scan`) of
`steps` steps; a finished molecule's later steps are no-ops. Training is teacher-forced on the BFS order of the
input molecule (`teacher_action`: the focus's lowest-index unbuilt bond, else stop), with a random start atom.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mgvae_jax import equivariant

Array = jnp.ndarray
_NEG = -1e9  # logit of a masked choice (finite: a fully masked row still has "stop")


@flax.struct.dataclass
class BuildState:
  """A partial molecule of one graph (vmap for a batch)."""
  bonds: Array  # [N, N] int32 bond order, 0 = none (edge class k <-> order k + 1)
  in_graph: Array  # [N] bool, reached from the start node
  closed: Array  # [N] bool, was the focus and stopped
  queue: Array  # [N] int32, nodes in the order they were reached
  qlen: Array  # [] int32, entries of queue in use
  ptr: Array  # [] int32, index of the focus in queue (>= qlen: finished)
  valence: Array  # [N] int32, valence left


def initial_state(real: Array, start: Array, valence: Array) -> BuildState:
  """The graph holding only `start` (no node at all if `real` has none). real [N] bool, start [], valence [N]."""
  n = real.shape[0]
  has = real.any()
  return BuildState(bonds=jnp.zeros((n, n), jnp.int32),
                    in_graph=(jnp.arange(n) == start) & has,
                    closed=jnp.zeros(n, bool),
                    queue=jnp.zeros(n, jnp.int32).at[0].set(start),
                    qlen=has.astype(jnp.int32), ptr=jnp.zeros((), jnp.int32),
                    valence=jnp.where(real, valence, 0).astype(jnp.int32))


def focus(state: BuildState) -> tuple[Array, Array]:
  """(focus node [], finished [] bool)."""
  n = state.queue.shape[0]
  return state.queue[jnp.minimum(state.ptr, n - 1)], state.ptr >= state.qlen


def allowed_actions(state: BuildState, real: Array, num_bond_types: int) -> Array:
  """[N * E + 1] bool: action u * E + k adds a bond of order k + 1 between the focus and u; the last one stops."""
  n = real.shape[0]
  f, done = focus(state)
  candidate = real & ~state.closed & (jnp.arange(n) != f) & (state.bonds[f] == 0)  # [N]
  room = jnp.minimum(state.valence[f], state.valence)  # [N]
  order = jnp.arange(1, num_bond_types + 1)
  ok = candidate[:, None] & (order[None, :] <= room[:, None]) & ~done  # [N, E]
  return jnp.concatenate([ok.reshape(-1), jnp.ones(1, bool)])


def apply_action(state: BuildState, action: Array, num_bond_types: int) -> BuildState:
  """The state after `action` (see allowed_actions). A finished state is returned unchanged."""
  n = state.queue.shape[0]
  f, done = focus(state)
  stop = action == n * num_bond_types
  u = jnp.minimum(action // num_bond_types, n - 1)
  order = (action % num_bond_types + 1).astype(jnp.int32)
  add = ~stop & ~done
  bonds = state.bonds.at[f, u].set(jnp.where(add, order, state.bonds[f, u]))
  bonds = bonds.at[u, f].set(jnp.where(add, order, bonds[u, f]))
  spent = jnp.where(add, order, 0)
  valence = state.valence.at[f].add(-spent).at[u].add(-spent)
  new = add & ~state.in_graph[u]
  slot = jnp.minimum(state.qlen, n - 1)
  queue = state.queue.at[slot].set(jnp.where(new, u, state.queue[slot]))
  closing = stop & ~done
  return BuildState(bonds=bonds, in_graph=state.in_graph.at[u].set(state.in_graph[u] | add),
                    closed=state.closed.at[f].set(state.closed[f] | closing), queue=queue,
                    qlen=state.qlen + new.astype(jnp.int32), ptr=state.ptr + closing.astype(jnp.int32),
                    valence=valence)


def teacher_action(state: BuildState, true_bonds: Array, num_bond_types: int) -> tuple[Array, Array]:
  """The BFS order's next action on the way to `true_bonds` [N, N] (bond orders): the focus's lowest-index bond not
  yet built to a node that is not closed, else stop. Returns (action [], valid []: False once finished)."""
  n = true_bonds.shape[0]
  f, done = focus(state)
  pending = (true_bonds[f] > 0) & (state.bonds[f] == 0) & ~state.closed & (jnp.arange(n) != f)
  u = jnp.argmax(pending)
  action = jnp.where(pending.any() & ~done, u * num_bond_types + true_bonds[f, u] - 1, n * num_bond_types)
  return action.astype(jnp.int32), ~done


def bfs_actions(true_bonds: Array, real: Array, start: Array, steps: int, num_bond_types: int = 3
                ) -> tuple[Array, Array, BuildState]:
  """Teacher-forced actions [steps], valid [steps] and the final state of rebuilding `true_bonds` from `start`."""
  big = jnp.full(real.shape, 99, jnp.int32)  # the teacher ignores valence

  def body(state, _):
    action, valid = teacher_action(state, true_bonds, num_bond_types)
    return apply_action(state, action, num_bond_types), (action, valid)

  final, (actions, valid) = jax.lax.scan(body, initial_state(real, start, big), None, length=steps)
  return actions, valid, final


def random_start(key: Array, real: Array) -> Array:
  """A uniformly random real node (0 if there is none). real [N] bool -> [] int32."""
  scores = jnp.where(real, jax.random.uniform(key, real.shape), -1.0)
  return jnp.argmax(scores).astype(jnp.int32)


def default_steps(max_nodes: int) -> int:
  """Enough steps for any molecule of max_nodes atoms: n stops plus at most 2n bonds (valence <= 4 on average)."""
  return 3 * max_nodes


# ---------------------------------------------------------------------------------------------------------------------
# The network.


TEACHER, SAMPLE, GREEDY = 0, 1, 2  # how a step picks its action (an array in the carry: one set of parameters)


class _Step(nn.Module):
  """One construction step for a batch: update H, score the choices, pick (teacher / sample / greedy), apply."""
  num_bond_types: int
  features: int

  @nn.compact
  def __call__(self, carry, key):
    h, state, real, true_bonds, nll, count, mode = carry
    b, n = real.shape
    e = self.num_bond_types
    f, done = jax.vmap(focus)(state)  # [B]
    onehot_f = jax.nn.one_hot(f, n, dtype=h.dtype)  # [B, N]
    inside = state.in_graph.astype(h.dtype)
    marks = jnp.stack([jnp.broadcast_to(onehot_f[:, :, None], (b, n, n)),
                       jnp.broadcast_to(onehot_f[:, None, :], (b, n, n)),
                       inside[:, :, None] * inside[:, None, :]], -1)  # [B, N, N, 3]
    bond_onehot = jax.nn.one_hot(state.bonds - 1, e, dtype=h.dtype)  # [B, N, N, E], 0 where no bond
    adjacency = (state.bonds > 0).astype(h.dtype)
    x = jnp.concatenate([h, bond_onehot, marks], -1)
    m = equivariant.SecondOrderLayer(self.features, self_term=True, name="message")(adjacency, x, real)
    h, _ = nn.GRUCell(self.features, name="gru")(h, m)  # gated recurrence on every pair
    h = h * (real[:, :, None] & real[:, None, :])[..., None].astype(h.dtype)
    row = jnp.einsum("bn,bnjc->bjc", onehot_f, h)  # [B, N, F]: the focus's pairs
    diag = jnp.einsum("bn,bcn->bc", onehot_f, jnp.diagonal(h, axis1=1, axis2=2))  # [B, F]: H[f, f]
    pair_in = jnp.concatenate([row, jnp.broadcast_to(diag[:, None], row.shape)], -1)
    bond_logits = nn.Dense(e, name="bond_head")(nn.relu(nn.Dense(self.features, name="bond_hidden")(pair_in)))
    pm = (inside[:, :, None] * inside[:, None, :])[..., None]
    pooled = (h * pm).sum((1, 2)) / jnp.maximum(pm.sum((1, 2)), 1.0)  # [B, F]
    stop_logit = nn.Dense(1, name="stop_head")(jnp.concatenate([diag, pooled], -1))  # [B, 1]
    logits = jnp.concatenate([bond_logits.reshape(b, n * e), stop_logit], -1)  # [B, N * E + 1]
    allowed = jax.vmap(lambda s, r: allowed_actions(s, r, e))(state, real)
    target, _ = jax.vmap(lambda s, t: teacher_action(s, t, e))(state, true_bonds)
    # Teacher forcing: a target the valence caps would forbid (a cap below the data) stays a finite term.
    allowed = allowed | ((mode == TEACHER) & jax.nn.one_hot(target, n * e + 1, dtype=bool))
    masked = jnp.where(allowed, logits, _NEG)
    logp = jax.nn.log_softmax(masked, -1)
    sampled = jax.random.categorical(key, masked, -1).astype(jnp.int32)
    greedy = jnp.argmax(masked, -1).astype(jnp.int32)
    action = jnp.where(mode == TEACHER, target, jnp.where(mode == SAMPLE, sampled, greedy))
    valid = ~done
    step_nll = -jnp.take_along_axis(logp, action[:, None], -1)[:, 0]
    nll = nll + jnp.where(valid, step_nll, 0.0)
    count = count + valid.astype(jnp.int32)
    state = jax.vmap(lambda s, a: apply_action(s, a, e))(state, action)
    return (h, state, real, true_bonds, nll, count, mode), None


class AutoregressiveDecoder(nn.Module):
  """Node types from z, then the BFS construction. Methods: __call__ (teacher-forced NLL), node_logits, build."""
  node_classes: int  # T, "no atom" included
  num_bond_types: int  # E
  valences: tuple[int, ...]  # valence cap of each node class ("no atom": 0)
  no_atom: int  # index of "no atom"
  steps: int  # scan length: at least atoms + bonds of any molecule (default_steps(N) always is)
  features: int = 16

  def setup(self):
    if len(self.valences) != self.node_classes:
      raise ValueError(f"AutoregressiveDecoder needs one valence per node class ({self.node_classes}), got "
                       f"{len(self.valences)}")
    if self.steps < 1:
      raise ValueError(f"AutoregressiveDecoder.steps must be >= 1, got {self.steps}")
    self.scan = nn.scan(_Step, variable_broadcast="params", split_rngs={"params": False}, length=self.steps)(
        self.num_bond_types, self.features, name="step")
    self.node_head = nn.Dense(self.node_classes, name="node_head")
    self.embed = nn.Dense(self.features, name="embed")
    self.pair_init = nn.Dense(self.features, name="pair_init")

  def node_logits(self, z: Array) -> Array:
    """[B, N, d] -> [B, N, T]: each node's type from its own latent."""
    return self.node_head(z)

  def _initial_pairs(self, z: Array, types: Array, real: Array) -> Array:
    x = self.embed(jnp.concatenate([z, jax.nn.one_hot(types, self.node_classes, dtype=z.dtype)], -1))  # [B, N, F]
    n = z.shape[1]
    eye = jnp.broadcast_to(jnp.eye(n, dtype=z.dtype)[None, :, :, None], (z.shape[0], n, n, 1))
    pairs = jnp.concatenate([x[:, :, None] * x[:, None, :], x[:, :, None] + x[:, None, :], eye], -1)
    h = jnp.tanh(self.pair_init(pairs))  # symmetric in (i, j)
    return h * (real[:, :, None] & real[:, None, :])[..., None].astype(h.dtype)

  def _run(self, mode: int, z: Array, types: Array, real: Array, start: Array, true_bonds: Array, keys: Array):
    b = z.shape[0]
    val_table = jnp.asarray(self.valences, jnp.int32)
    state = jax.vmap(initial_state)(real, start, val_table[types])
    h = self._initial_pairs(z, types, real)
    carry = (h, state, real, true_bonds, jnp.zeros(b, z.dtype), jnp.zeros(b, jnp.int32), jnp.asarray(mode))
    (_, state, _, _, nll, count, _), _ = self.scan(carry, keys)
    return state, nll, count

  def __call__(self, z: Array, types: Array, real: Array, true_bonds: Array, start: Array) -> tuple[Array, Array]:
    """Teacher-forced NLL of the BFS construction, summed over steps [B], and the number of steps [B].

    z [B, N, d]; types [B, N] int (true node types); real [B, N] bool (atoms); true_bonds [B, N, N] int bond orders;
    start [B] int (a real atom each).
    """
    keys = jax.random.split(jax.random.PRNGKey(0), self.steps)  # unused by teacher forcing
    _, nll, count = self._run(TEACHER, z, types, real, start, true_bonds, keys)
    return nll, count

  def build(self, z: Array, types: Array, key: Optional[Array]) -> tuple[BuildState, Array]:
    """Construct molecules from latents and node types [B, N]: sampled choices (key) or greedy ones (key None).

    Returns the final states and real [B, N] (the slots that are atoms of the molecule: reached from the start).
    """
    b, n, _ = z.shape
    real = types != self.no_atom
    if key is None:
      start = jax.vmap(lambda r: jnp.argmax(r).astype(jnp.int32))(real)
      keys, mode = jax.random.split(jax.random.PRNGKey(0), self.steps), GREEDY
    else:
      k_start, k_steps = jax.random.split(key)
      start = jax.vmap(random_start)(jax.random.split(k_start, b), real)
      keys, mode = jax.random.split(k_steps, self.steps), SAMPLE
    state, _, _ = self._run(mode, z, types, real, start, jnp.zeros((b, n, n), jnp.int32), keys)
    return state, state.in_graph


def valence_table(type_names, no_atom_name: str) -> tuple[int, ...]:
  """Valence cap per node class from chem.decode.max_valence ("no atom": 0)."""
  from mgvae_jax.chem import decode  # pylint: disable=g-import-not-at-top  (RDKit only where molecules are)

  return tuple(0 if name == no_atom_name else int(decode.max_valence(name)) for name in type_names)


def to_probabilities(types: Array, state: BuildState, in_graph: Array, node_classes: int, num_bond_types: int,
                     no_atom: int) -> dict[str, Array]:
  """A built molecule as one-hot "probabilities" {node [B,N,T], edge [B,N,N], edge_type [B,N,N,E]} for chem.decode:
  slots never reached become "no atom", so the decoded molecule is exactly the connected one that was built."""
  types = jnp.where(in_graph, types, no_atom)
  edge = (state.bonds > 0).astype(jnp.float32)
  return {"node": jax.nn.one_hot(types, node_classes), "edge": edge,
          "edge_type": jax.nn.one_hot(jnp.maximum(state.bonds - 1, 0), num_bond_types) * edge[..., None]}


def construction_steps(real: np.ndarray, bond_orders: np.ndarray) -> np.ndarray:
  """Steps each molecule's construction takes (one per atom, one per bond): real [.., N], bond_orders [.., N, N]."""
  return np.asarray(real).sum(-1) + (np.asarray(bond_orders) > 0).sum((-1, -2)) // 2


def bond_orders(edges: Array) -> Array:
  """One-hot bond channels [.., N, N, E] -> bond orders [.., N, N] int32 (0 = none)."""
  edges = jnp.asarray(edges)
  return jnp.where(edges.sum(-1) > 0, jnp.argmax(edges, -1) + 1, 0).astype(jnp.int32)
