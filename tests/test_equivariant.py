"""Equivariance, padding invariance, completeness and gradients of every op in mgvae_jax.equivariant."""

import functools

import flax.linen as nn
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgvae_jax import equivariant as eq
from mgvae_jax import testing

C = 3  # channels in tests
D = 4  # output channels of linear maps


def _weights(seed, ops):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(ops, C, D)), jnp.float32), jnp.asarray(rng.normal(size=D), jnp.float32),
          jnp.asarray(rng.normal(size=D), jnp.float32))


def _pure_cases():
  """(name, batched fn, in_orders, out_order). Inputs are always (adjacency, nodes, edges, mask) of a random batch."""
  w15, b, db = _weights(0, 15)
  w5, _, _ = _weights(1, 5)
  w2, _, _ = _weights(2, 2)
  wc = w15[:6].reshape(6 * C, D)
  v = jax.vmap
  cases = [
      ("tensor_product_contractions", lambda a, x, e, m: v(eq.tensor_product_contractions)(a, e, m), 2),
      ("tensor_product_contractions_unnormalized",
       lambda a, x, e, m: v(functools.partial(eq.tensor_product_contractions, normalize=False))(a, e, m), 2),
      ("contract_linear", lambda a, x, e, m: v(eq.contract_linear, (0, 0, 0, None))(a, e, m, wc), 2),
      ("contract_to_first_order", lambda a, x, e, m: v(eq.contract_to_first_order)(e, m), 1),
      ("mean_aggregate", lambda a, x, e, m: v(eq.mean_aggregate)(a, x, m), 1),
      ("promote_to_second_order", lambda a, x, e, m: v(eq.promote_to_second_order)(x, e, m), 2),
      ("basis_2to2", lambda a, x, e, m: v(eq.basis_2to2)(e, m), 2),
      ("basis_2to1", lambda a, x, e, m: v(eq.basis_2to1)(e, m), 1),
      ("basis_1to2", lambda a, x, e, m: v(eq.basis_1to2)(x, m), 2),
      ("basis_1to1", lambda a, x, e, m: v(eq.basis_1to1)(x, m), 1),
      ("linear_2to2", lambda a, x, e, m: v(eq.linear_2to2, (0, 0, None, None, None))(e, m, w15, b, db), 2),
      ("linear_2to1", lambda a, x, e, m: v(eq.linear_2to1, (0, 0, None, None))(e, m, w5, b), 1),
      ("linear_1to2", lambda a, x, e, m: v(eq.linear_1to2, (0, 0, None, None, None))(x, m, w5, b, db), 2),
      ("linear_1to1", lambda a, x, e, m: v(eq.linear_1to1, (0, 0, None, None))(x, m, w2, b), 1),
  ]
  return cases


def _module_cases():
  """(name, module, takes) where takes says which of (adjacency, nodes, edges) the module reads."""
  return [
      ("SecondOrderLayer", eq.SecondOrderLayer(features=D, hidden=(5,)), ("a", "e")),
      ("SecondOrderLayer_tanh", eq.SecondOrderLayer(features=D, activation=jnp.tanh), ("a", "e")),
      ("EquivariantLinear2to2", eq.EquivariantLinear2to2(features=D), ("e",)),
      ("EquivariantLinear2to1", eq.EquivariantLinear2to1(features=D), ("e",)),
      ("EquivariantLinear1to2", eq.EquivariantLinear1to2(features=D), ("x",)),
      ("EquivariantLinear1to1", eq.EquivariantLinear1to1(features=D), ("x",)),
      ("FirstOrderMPNN", eq.FirstOrderMPNN(features=D, activation=jnp.tanh), ("a", "x")),
  ]


_OUT_ORDER = {"SecondOrderLayer": 2, "SecondOrderLayer_tanh": 2, "EquivariantLinear2to2": 2,
              "EquivariantLinear2to1": 1, "EquivariantLinear1to2": 2, "EquivariantLinear1to1": 1,
              "FirstOrderMPNN": 1}


def _bind_module(module, takes, batch):
  a, x, e, m = batch
  pick = {"a": a, "x": x, "e": e}
  params = module.init(jax.random.PRNGKey(0), *[pick[t] for t in takes], m)
  fn = lambda a, x, e, m: module.apply(params, *[{"a": a, "x": x, "e": e}[t] for t in takes], m)
  return fn, params


_INIT_PARAMS = {}  # name -> the module's parameters initialised on _INIT_BATCH (filled by _all_cases)


def _all_cases():
  """(name, fn(a, x, e, m), out_order) with module parameters initialised once; each fn jitted once."""
  cases = [(name, jax.jit(fn), order) for name, fn, order in _pure_cases()]
  for name, module, takes in _module_cases():
    fn, _INIT_PARAMS[name] = _bind_module(module, takes, _INIT_BATCH)
    cases.append((name, jax.jit(fn), _OUT_ORDER[name]))
  return cases


def _batch(seed, sizes, pad_size, garbage=True, scatter=True):
  rng = np.random.default_rng(seed)
  x, e, m = testing.random_graph_batch(rng, sizes, pad_size, node_dim=C, edge_dim=C,
                                       garbage_padding=garbage, scatter=scatter)
  pm = (m[:, :, None] & m[:, None, :])
  # The adjacency is the binarised real edges, with garbage in padded slots that every op must ignore.
  a = np.where(pm, (np.abs(e).sum(-1) > 0).astype(np.float32), np.abs(e[..., 0]))
  return tuple(jnp.asarray(t) for t in (a, x, e, m))


_INIT_BATCH = _batch(0, [3, 4], 5)
ALL_CASES = _all_cases()
CASE_IDS = [c[0] for c in ALL_CASES]

# Two static slot counts keep compilation to two programs per op, while the real sizes (1..N) and so the padding
# amounts (0..N-1) and the slots the real nodes occupy vary freely.
PAD_SIZES = (5, 8)


@st.composite
def padded_sizes(draw):
  pad_size = draw(st.sampled_from(PAD_SIZES))
  sizes = draw(st.lists(st.integers(1, pad_size), min_size=2, max_size=2))
  return sizes, pad_size


@pytest.mark.parametrize("name,fn,out_order", ALL_CASES, ids=CASE_IDS)
@hypothesis.given(shape=padded_sizes(), seed=st.integers(0, 2**16))
def test_permutation_equivariant(name, fn, out_order, shape, seed):
  del name
  batch = _batch(seed, *shape)
  testing.assert_permutation_equivariant(fn, batch, (2, 1, 2, 1), out_order, key=jax.random.PRNGKey(seed), trials=1)


def _gather_real(out, mask, g, order):
  got = np.asarray(out[g])
  idx = np.flatnonzero(mask[g])
  for axis in range(order):
    got = np.take(got, idx, axis=axis)
  return got


def _embed(batch, g, pad_size, rng):
  """Graph g of `batch` alone, its real nodes moved (in order) to random slots of a fresh garbage-filled batch."""
  a, x, e, m = (np.asarray(t) for t in batch)
  src = np.flatnonzero(m[g])
  dst = np.sort(rng.permutation(pad_size)[:src.size])
  out = [rng.normal(size=(1, pad_size, pad_size)), rng.normal(size=(1, pad_size, x.shape[-1])),
         rng.normal(size=(1, pad_size, pad_size, e.shape[-1])), np.zeros((1, pad_size), bool)]
  out[0][0][np.ix_(dst, dst)] = a[g][np.ix_(src, src)]
  out[1][0, dst] = x[g, src]
  out[2][0][np.ix_(dst, dst)] = e[g][np.ix_(src, src)]
  out[3][0, dst] = True
  return tuple(jnp.asarray(t, jnp.float32 if t.dtype != bool else bool) for t in out)


@pytest.mark.parametrize("name,fn,out_order", ALL_CASES, ids=CASE_IDS)
@hypothesis.given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=2), seed=st.integers(0, 2**16))
def test_padding_invariant(name, fn, out_order, sizes, seed):
  """A graph padded to 5 slots and the same graph padded to 8 (other slots, other garbage) give the same real
  outputs; padded outputs are exactly 0; so normalisation cannot depend on the padded size."""
  del name
  rng = np.random.default_rng(seed)
  small = _batch(seed, sizes, PAD_SIZES[0])
  out_small = fn(*small)
  m_small = np.asarray(small[3])
  for g in range(len(sizes)):
    big = _embed(small, g, PAD_SIZES[1], rng)
    out_big = fn(*big)
    np.testing.assert_allclose(_gather_real(out_big, np.asarray(big[3]), 0, out_order),
                               _gather_real(out_small, m_small, g, out_order), atol=1e-5, rtol=1e-5)
    for out, m in ((out_small, m_small[g]), (out_big, np.asarray(big[3])[0])):
      o = np.asarray(out)[g if out is out_small else 0]
      pad_region = ~m if out_order == 1 else ~(m[:, None] & m[None, :])
      assert np.all(o[pad_region] == 0.0), "padded outputs must be exactly zero"


@pytest.mark.parametrize("name,fn,out_order", ALL_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", [1, 3])
def test_no_padding_matches_padded(name, fn, out_order, n):
  """Padding invariance against the unpadded graph itself (N = n exactly)."""
  del name
  batch = _batch(n, [n, n], 6)
  out = fn(*batch)
  a, x, e, m = (np.asarray(t) for t in batch)
  for g in range(2):
    i = np.flatnonzero(m[g])
    compact = (a[g][np.ix_(i, i)][None], x[g, i][None], e[g][np.ix_(i, i)][None], m[g, i][None])
    ref = np.asarray(fn(*(jnp.asarray(t) for t in compact)))[0]
    np.testing.assert_allclose(_gather_real(out, m, g, out_order), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,module,takes", _module_cases(), ids=[c[0] for c in _module_cases()])
@hypothesis.given(shape=padded_sizes(), seed=st.integers(0, 2**16))
@hypothesis.settings(max_examples=10)
def test_module_gradients_finite(name, module, takes, shape, seed):
  batch = _batch(seed, *shape)
  params = _INIT_PARAMS[name]  # what _bind_module(module, takes, _INIT_BATCH) gives, initialised once per module
  grads = _GRAD_FNS[name](params, batch)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(np.asarray(g))), f"non-finite gradient at {jax.tree_util.keystr(path)}"


def _grad_fn(module, takes):
  def loss(p, batch):
    a, x, e, m = batch
    return jnp.sum(module.apply(p, *[{"a": a, "x": x, "e": e}[t] for t in takes], m) ** 2)
  return jax.jit(jax.grad(loss))


_GRAD_FNS = {name: _grad_fn(module, takes) for name, module, takes in _module_cases()}


@pytest.mark.parametrize("name,module,takes", _module_cases(), ids=[c[0] for c in _module_cases()])
def test_every_parameter_gets_a_gradient(name, module, takes):
  """No dead parameters: on a generic batch every parameter leaf has a non-zero gradient."""
  batch = _batch(7, [5, 6], 8)
  _, params = _bind_module(module, takes, batch)
  target = jax.random.normal(jax.random.PRNGKey(1), jax.eval_shape(lambda p: module.apply(
      p, *[{"a": batch[0], "x": batch[1], "e": batch[2]}[t] for t in takes], batch[3]), params).shape)
  loss = lambda p: jnp.sum((module.apply(p, *[{"a": batch[0], "x": batch[1], "e": batch[2]}[t] for t in takes],
                                         batch[3]) - target) ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(np.asarray(g)).max() > 0, f"{name}: zero gradient at {jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("n", [4, 5])
@pytest.mark.parametrize("normalize", [True, False])
def test_bases_are_complete(n, normalize):
  """The basis maps are linearly independent as linear maps: rank 15 / 5 / 5 / 2.

  Each map is written out as its full matrix by applying it to every unit input (n^2 of them for second order, n for
  first order); a single input cannot show this, since e.g. maps 13 and 14 both return a constant matrix.
  """
  mask = jnp.ones(n, bool)
  units2 = jnp.eye(n * n, dtype=jnp.float32).reshape(n * n, n, n, 1)
  units1 = jnp.eye(n, dtype=jnp.float32).reshape(n, n, 1)
  for basis, units, ops in ((eq.basis_2to2, units2, 15), (eq.basis_2to1, units2, 5), (eq.basis_1to2, units1, 5),
                            (eq.basis_1to1, units1, 2)):
    out = np.asarray(jax.vmap(lambda x: basis(x, mask, normalize))(units), np.float64)  # [inputs, ..., ops, 1]
    mat = np.moveaxis(out[..., 0], -1, 0).reshape(ops, -1)
    assert np.linalg.matrix_rank(mat) == ops, basis.__name__


@pytest.mark.parametrize("seed", [0, 1])
def test_parts_layers_equal_general_layers(seed):
  """linear_2to2_parts / linear_2to1_parts / activation_parts on x = s + a equal the general maps on x."""
  a, x, e, m = _batch(seed, [4, 6, 2], 8)
  w15, b, db = _weights(seed, 15)
  w5, _, _ = _weights(seed + 1, 5)
  sym, anti = 0.5 * (e + jnp.swapaxes(e, 1, 2)), 0.5 * (e - jnp.swapaxes(e, 1, 2))
  v5, v4 = lambda f: jax.vmap(f, (0, 0, 0, None, None, None)), lambda f: jax.vmap(f, (0, 0, 0, None, None))
  want = jax.vmap(eq.linear_2to2, (0, 0, None, None, None))(e, m, w15, b, db)
  ys, ya = v5(eq.linear_2to2_parts)(sym, anti, m, w15, b, db)
  np.testing.assert_allclose(ys + ya, want, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(ys, 0.5 * (want + jnp.swapaxes(want, 1, 2)), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(ya, -jnp.swapaxes(ya, 1, 2), atol=1e-6)
  # a = None means a zero antisymmetric part.
  want0 = jax.vmap(eq.linear_2to2, (0, 0, None, None, None))(sym, m, w15, b, db)
  ys0, ya0 = jax.vmap(eq.linear_2to2_parts, (0, None, 0, None, None, None))(sym, None, m, w15, b, db)
  np.testing.assert_allclose(ys0 + ya0, want0, atol=1e-5, rtol=1e-5)
  # The activation of the parts is the parts of the activation.
  rs, ra = eq.activation_parts(jax.nn.relu, ys, ya)
  np.testing.assert_allclose(rs + ra, jax.nn.relu(want), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(rs, jnp.swapaxes(rs, 1, 2), atol=1e-6)
  got1 = v4(eq.linear_2to1_parts)(sym, anti, m, w5, b)
  np.testing.assert_allclose(got1, jax.vmap(eq.linear_2to1, (0, 0, None, None))(e, m, w5, b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_parts_node_channels_equal_diagonal_embedded_channels(seed):
  """linear_2to2_parts(s, a, u) equals the general map on [s + a | delta_ij u_i] (u as diagonal channels)."""
  a, x, e, m = _batch(seed, [4, 6, 2], 8)
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(15, 2 * C, D)), jnp.float32)
  _, b, db = _weights(seed, 15)
  sym, anti = 0.5 * (e + jnp.swapaxes(e, 1, 2)), 0.5 * (e - jnp.swapaxes(e, 1, 2))
  eye = jnp.eye(e.shape[1], dtype=e.dtype)[None, :, :, None]
  full = jnp.concatenate([e, eye * x[:, :, None, :]], -1)  # x_i on the diagonal
  want = jax.vmap(eq.linear_2to2, (0, 0, None, None, None))(full, m, w, b, db)
  ys, ya = jax.vmap(eq.linear_2to2_parts, (0, 0, 0, None, None, None, None, 0))(sym, anti, m, w, b, db, True, x)
  np.testing.assert_allclose(ys + ya, want, atol=1e-4, rtol=1e-4)
  got = eq.EquivariantLinear2to2Parts(D).apply({"params": {"kernel": w, "bias": b, "diag_bias": db}}, sym, None, m, x)
  want0 = jax.vmap(eq.linear_2to2, (0, 0, None, None, None))(jnp.concatenate([sym, eye * x[:, :, None, :]], -1), m,
                                                               w, b, db)
  np.testing.assert_allclose(got[0] + got[1], want0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("seed,fn", [(0, jax.nn.relu), (1, jnp.tanh), (2, jax.nn.softplus)])
def test_activation_parts_layer_equals_linear_then_activation(seed, fn):
  """linear_2to2_activation_parts is activation_parts after linear_2to2_parts: values and gradients, on padded
  graphs, with and without an antisymmetric part and node channels, and gamma(y) where y is the general map."""
  a, x, e, m = _batch(seed, [4, 6, 2], 8)
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(15, 2 * C, D)), jnp.float32)
  _, b, db = _weights(seed, 15)
  sym, anti = 0.5 * (e + jnp.swapaxes(e, 1, 2)), 0.5 * (e - jnp.swapaxes(e, 1, 2))
  pm = (m[:, :, None] & m[:, None, :])[..., None]
  two_step = lambda s, a, m, w, b, db, u: eq.activation_parts(fn, *eq.linear_2to2_parts(s, a, m, w, b, db, True, u))
  fused = lambda s, a, m, w, b, db, u: eq.linear_2to2_activation_parts(fn, s, a, m, w, b, db, True, u)
  for anti_in, u, kernel in ((anti, None, w[:, :C]), (None, None, w[:, :C]), (anti, x, w), (None, x, w)):
    axes = (0, None if anti_in is None else 0, 0, None, None, None, None if u is None else 0)
    args = (sym, anti_in, m, kernel, b, db, u)
    want_s, want_a = jax.vmap(two_step, axes)(*args)
    got_s, got_a = jax.vmap(fused, axes)(*args)
    np.testing.assert_allclose(got_s, want_s, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(got_a, want_a, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(got_s, jnp.swapaxes(got_s, 1, 2), atol=1e-6)  # the parts stay (anti)symmetric
    np.testing.assert_allclose(got_a, -jnp.swapaxes(got_a, 1, 2), atol=1e-6)
    if fn is not jax.nn.softplus:  # gamma(0) = 0: padded pairs stay exactly 0
      assert not np.any(np.asarray(got_s + got_a)[~np.asarray(pm[..., 0])])
    # Gradients with respect to the inputs and the weights agree as well.
    loss = lambda f: lambda s, k, b, db: sum(jnp.sum(jnp.sin(t)) for t in jax.vmap(f, axes)(
        s, anti_in, m, k, b, db, u))
    g_want = jax.grad(loss(two_step), argnums=(0, 1, 2, 3))(sym, kernel, b, db)
    g_got = jax.grad(loss(fused), argnums=(0, 1, 2, 3))(sym, kernel, b, db)
    for gw, gg in zip(g_want, g_got):
      np.testing.assert_allclose(gg, gw, atol=1e-4, rtol=1e-4)
  # On x = s + a the fused layer gives gamma of the general map.
  ys, ya = jax.vmap(fused, (0, 0, 0, None, None, None, None))(sym, anti, m, w[:, :C], b, db, None)
  want = jax.vmap(eq.linear_2to2, (0, 0, None, None, None))(e, m, w[:, :C], b, db)
  np.testing.assert_allclose(ys + ya, fn(want), atol=2e-5, rtol=2e-5)  # want is 0 off the real pairs


def test_activation_module_option():
  """EquivariantLinear2to2Parts(activation=gamma) has the same parameters and returns gamma of its linear output."""
  a, x, e, m = _batch(3, [5, 3], 6)
  sym, anti = 0.5 * (e + jnp.swapaxes(e, 1, 2)), 0.5 * (e - jnp.swapaxes(e, 1, 2))
  linear, fused = eq.EquivariantLinear2to2Parts(D), eq.EquivariantLinear2to2Parts(D, activation=jnp.tanh)
  params = linear.init(jax.random.PRNGKey(1), sym, anti, m)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      fused.init(jax.random.PRNGKey(1), sym, anti, m))
  want = eq.activation_parts(jnp.tanh, *linear.apply(params, sym, anti, m))
  for g, w_ in zip(fused.apply(params, sym, anti, m), want):
    np.testing.assert_allclose(g, w_, atol=2e-5, rtol=2e-5)
  with pytest.raises(ValueError, match="symmetric_output"):
    eq.EquivariantLinear2to2Parts(D, activation=jnp.tanh, symmetric_output=True).init(
        jax.random.PRNGKey(1), sym, anti, m)


def test_parts_modules_share_parameters_with_general_modules():
  a, x, e, m = _batch(9, [5, 3], 6)
  sym, anti = 0.5 * (e + jnp.swapaxes(e, 1, 2)), 0.5 * (e - jnp.swapaxes(e, 1, 2))
  for general, parts, extra in ((eq.EquivariantLinear2to2(D), eq.EquivariantLinear2to2Parts(D), {}),
                                (eq.EquivariantLinear2to1(D), eq.EquivariantLinear2to1Parts(D), {})):
    params = general.init(jax.random.PRNGKey(1), e, m)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        parts.init(jax.random.PRNGKey(1), sym, anti, m))
    got = parts.apply(params, sym, anti, m)
    got = got[0] + got[1] if isinstance(got, tuple) else got
    np.testing.assert_allclose(got, general.apply(params, e, m), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_factored_linear_maps_equal_basis_contraction(seed):
  """The memory-lean linear maps equal the sum of basis tensors times weights."""
  a, x, e, m = _batch(seed, [4, 6, 2], 8)
  w15, b, db = _weights(seed, 15)
  w5, _, _ = _weights(seed + 1, 5)
  pm = (m[:, :, None] & m[:, None, :])[..., None]
  got = jax.vmap(eq.linear_2to2, (0, 0, None, None, None))(e, m, w15, b, db)
  want = jnp.einsum("bijkc,kcd->bijd", jax.vmap(eq.basis_2to2)(e, m), w15) + b + jnp.eye(e.shape[1])[..., None] * db
  np.testing.assert_allclose(got, want * pm, atol=1e-5, rtol=1e-5)
  got = jax.vmap(eq.linear_1to2, (0, 0, None, None, None))(x, m, w5, b, db)
  want = jnp.einsum("bijkc,kcd->bijd", jax.vmap(eq.basis_1to2)(x, m), w5) + b + jnp.eye(x.shape[1])[..., None] * db
  np.testing.assert_allclose(got, want * pm, atol=1e-5, rtol=1e-5)


def test_contractions_match_definition():
  """Each of the six channels blocks equals the explicit contraction of the fourth-order tensor A (x) H."""
  rng = np.random.default_rng(3)
  n = 5
  a = rng.normal(size=(n, n))
  h = rng.normal(size=(n, n, 2))
  t = np.einsum("ab,cdk->abcdk", a, h)  # [n, n, n, n, C]
  want = [np.einsum("jjcdk->cdk", t), np.einsum("abjjk->abk", t), np.einsum("jbjdk->bdk", t),
          np.einsum("jbcjk->bck", t), np.einsum("ajjdk->adk", t), np.einsum("ajcjk->ack", t)]
  got = np.asarray(eq.tensor_product_contractions(jnp.asarray(a, jnp.float32), jnp.asarray(h, jnp.float32),
                                                  jnp.ones(n, bool), normalize=False))
  np.testing.assert_allclose(got, np.concatenate(want, -1), atol=1e-4, rtol=1e-5)
  got_norm = np.asarray(eq.tensor_product_contractions(jnp.asarray(a, jnp.float32), jnp.asarray(h, jnp.float32),
                                                       jnp.ones(n, bool)))
  np.testing.assert_allclose(got_norm, np.concatenate(want, -1) / n, atol=1e-5, rtol=1e-5)


def test_mean_aggregate_is_degree_normalised():
  a = jnp.asarray([[0, 1, 1], [1, 0, 0], [1, 0, 0]], jnp.float32)
  h = jnp.asarray([[1.0], [2.0], [4.0]])
  out = eq.mean_aggregate(a, h, jnp.ones(3, bool))
  np.testing.assert_allclose(out[:, 0], [3.0, 1.0, 1.0])
  isolated = eq.mean_aggregate(jnp.zeros((3, 3)), h, jnp.ones(3, bool))
  assert np.all(np.asarray(isolated) == 0)


def test_contract_to_first_order_matches_definition():
  rng = np.random.default_rng(0)
  h = rng.normal(size=(4, 4, 2)).astype(np.float32)
  z = np.asarray(eq.contract_to_first_order(jnp.asarray(h), jnp.ones(4, bool), normalize=False))
  np.testing.assert_allclose(z, np.concatenate([h.sum(1), h.sum(0)], -1), rtol=1e-5, atol=1e-5)


def test_jitted_layer_traces_once_per_shape():
  layer = eq.SecondOrderLayer(features=4)
  traces = []

  @jax.jit
  def apply(params, a, h, m):
    traces.append(h.shape)
    return layer.apply(params, a, h, m)

  b1 = _batch(0, [3, 4], 5)
  params = layer.init(jax.random.PRNGKey(0), b1[0], b1[2], b1[3])
  apply(params, b1[0], b1[2], b1[3])
  b2 = _batch(1, [2, 5], 5)  # same padded shape [2, 5, ...], other values and sizes
  apply(params, b2[0], b2[2], b2[3])
  assert len(traces) == 1
  b3 = _batch(2, [2, 5], 8)  # a new pad size
  apply(params, b3[0], b3[2], b3[3])
  assert len(traces) == 2


def test_second_order_layer_is_mlp_of_contractions():
  """The module computes gamma(MLP(concatenated contractions)) and nothing else."""
  a, x, e, m = _batch(5, [4, 3], 5)
  layer = eq.SecondOrderLayer(features=D, hidden=(6,), activation=nn.tanh)
  params = layer.init(jax.random.PRNGKey(0), a, e, m)["params"]
  contr = jax.vmap(eq.tensor_product_contractions)(a, e, m)  # [B, N, N, 6C]
  hidden = jnp.tanh(contr @ params["kernel"] + params["bias"])
  want = jnp.tanh(hidden @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
  pm = (m[:, :, None] & m[:, None, :])[..., None]
  np.testing.assert_allclose(layer.apply({"params": params}, a, e, m), want * pm, atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_contract_linear_equals_contractions_then_kernel(normalize):
  a, x, e, m = _batch(11, [5, 2], 8)
  a = a + jnp.asarray(np.random.default_rng(0).normal(size=a.shape), jnp.float32)  # general (asymmetric) A
  kernel = jnp.asarray(np.random.default_rng(1).normal(size=(6 * C, D)), jnp.float32)
  got = jax.vmap(eq.contract_linear, (0, 0, 0, None, None))(a, e, m, kernel, normalize)
  want = jax.vmap(eq.tensor_product_contractions, (0, 0, 0, None))(a, e, m, normalize) @ kernel
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
