"""``F.scaled_dot_product_attention``, ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
against PyTorch with copied weights: outputs, attention weights, and the gradients of inputs,
float masks and every parameter, for bool/float/causal/padding masks, batch-first and
sequence-first, unbatched inputs, cross-attention with other key/value sizes; float64
gradchecks; and the issue's must-show: a pre-norm GELU encoder block with a causal mask
trains, step for step the same as PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
from torch_parity import assert_matches_torch, assert_module_matches_torch, copy_torch_weights

import pyrt
import pyrt.nn.functional as F
from pyrt import nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --- scaled_dot_product_attention -------------------------------------------------------

def _bool_mask(shape: tuple[int, ...], seed: int, dead_row: bool = False) -> np.ndarray:
    mask = np.random.default_rng(seed).random(shape) > 0.4
    if dead_row:
        mask[..., 1, :] = False  # a query that may attend to nothing: torch gives 0, so must we
    return mask


SDPA = [
    ("plain", {}, None),
    ("causal", {"is_causal": True}, None),
    ("scale", {"scale": 0.3}, None),
    ("bool_mask_broadcast", {}, ("bool", (5, 6))),
    ("bool_mask_full_with_dead_row", {}, ("bool_dead", (2, 3, 5, 6))),
    ("float_mask_with_grad", {}, ("float", (3, 5, 6))),
    ("float_mask_with_minus_inf", {"scale": 2.0}, ("float_inf", (1, 5, 6))),
]


@pytest.mark.parametrize(("name", "kwargs", "mask"), SDPA, ids=[c[0] for c in SDPA])
def test_sdpa_matches_torch(name, kwargs, mask) -> None:
    arrays = [_rand(2, 3, 5, 4), _rand(2, 3, 6, 4, seed=1), _rand(2, 3, 6, 7, seed=2)]
    grads = [True, True, True]
    if mask is not None:
        kind, shape = mask
        if kind.startswith("bool"):
            arrays.append(_bool_mask(shape, 3, dead_row=kind == "bool_dead"))
            grads.append(False)
        else:
            m = _rand(*shape, seed=4)
            if kind == "float_inf":
                m[..., 2, :3] = -np.inf
            arrays.append(m)
            grads.append(kind == "float")  # a learned additive bias gets its gradient

    def call(sdpa, module):
        def run(q, k, v, *mask):
            return sdpa(q, k, v, attn_mask=mask[0] if mask else None, **kwargs)
        return run

    assert_matches_torch(call(F.scaled_dot_product_attention, pyrt),
                         call(TF.scaled_dot_product_attention, torch), arrays, requires_grad=grads,
                         rtol=1e-10, atol=1e-12)


def test_sdpa_causal_with_more_keys_than_queries_matches_torch() -> None:
    arrays = [_rand(2, 3, 4), _rand(2, 6, 4, seed=1), _rand(2, 6, 5, seed=2)]
    assert_matches_torch(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), arrays)


def test_sdpa_gradcheck_with_mask_and_dropout() -> None:
    q, k, v = (pyrt.tensor(_rand(2, 4, 3, seed=s), requires_grad=True) for s in range(3))
    bias = pyrt.tensor(_rand(4, 4, seed=5), requires_grad=True)

    def attend(q, k, v, bias):
        pyrt.manual_seed(7)  # the same dropout mask on every call the check makes
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.3)

    assert pyrt.gradcheck(attend, [q, k, v, bias])
    assert pyrt.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])


def test_sdpa_dropout_drops_and_rescales_weights() -> None:
    q = pyrt.tensor(_rand(1, 64, 8))
    v = pyrt.tensor(np.ones((1, 64, 1)))
    # Each output is sum(kept weights) / (1 - p): rows of ones average out to 1, single rows vary.
    out = F.scaled_dot_product_attention(q, q, v, dropout_p=0.5).data.ravel()
    assert not np.allclose(out, 1.0) and abs(out.mean() - 1.0) < 0.15
    assert np.array_equal(F.scaled_dot_product_attention(q, q, v, dropout_p=1.0).data, np.zeros((1, 64, 1)))


def test_sdpa_errors() -> None:
    q = pyrt.ones(2, 3, 4)
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=pyrt.ones(3, 3), is_causal=True)
    with pytest.raises(ValueError, match="does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=pyrt.tensor(np.ones((2, 2), bool)))
    with pytest.raises(ValueError, match="share the last dim"):
        F.scaled_dot_product_attention(q, pyrt.ones(2, 3, 5), q)
    with pytest.raises(TypeError, match="one float dtype"):
        F.scaled_dot_product_attention(q, q, q.double())


# --- MultiheadAttention --------------------------------------------------------------------

E, H, L, S, N = 8, 2, 5, 6, 3


def _mha_pair(**kwargs):
    theirs = torch.nn.MultiheadAttention(E, H, dtype=torch.float64, **kwargs)
    ours = nn.MultiheadAttention(E, H, dtype=np.float64, **kwargs)
    return ours, theirs


MHA = [
    ("self_seq_first", {}, {}),
    ("self_batch_first", {"batch_first": True}, {}),
    ("heads_not_averaged", {}, {"average_attn_weights": False}),
    ("no_weights", {"bias": False}, {"need_weights": False}),
    ("bool_attn_mask_2d", {}, {"attn_mask": "bool2"}),
    ("float_attn_mask_3d", {"batch_first": True}, {"attn_mask": "float3"}),
    ("key_padding_bool", {}, {"key_padding_mask": "bool"}),
    ("key_padding_float_and_causal", {}, {"key_padding_mask": "float", "attn_mask": "causal",
                                          "is_causal": True}),
]


def _masks(kwargs: dict, length: int, source: int) -> dict:
    rng = np.random.default_rng(11)
    made = dict(kwargs)
    kinds = {"bool2": lambda: rng.random((length, source)) > 0.6,
             "float3": lambda: rng.standard_normal((N * H, length, source)),
             "causal": lambda: np.triu(np.ones((length, source), bool), 1)}
    if "attn_mask" in made:
        made["attn_mask"] = kinds[made["attn_mask"]]()
    if made.get("key_padding_mask") == "bool":
        kpm = np.zeros((N, source), bool)
        kpm[0, -2:] = True
        made["key_padding_mask"] = kpm
    elif made.get("key_padding_mask") == "float":
        made["key_padding_mask"] = rng.standard_normal((N, source))
    return made


@pytest.mark.parametrize(("name", "init", "kwargs"), MHA, ids=[c[0] for c in MHA])
@pytest.mark.parametrize("self_attention", [True, False])
def test_multihead_attention_matches_torch(name, init, kwargs, self_attention) -> None:
    ours, theirs = _mha_pair(**init)
    source = L if self_attention else S
    made = _masks(kwargs, L, source)
    batch_first = init.get("batch_first", False)
    shape = (lambda n: (N, n, E)) if batch_first else (lambda n: (n, N, E))
    arrays = [_rand(*shape(L))] if self_attention else [_rand(*shape(L)), _rand(*shape(S), seed=1),
                                                        _rand(*shape(S), seed=2)]
    mask_names = [k for k in ("attn_mask", "key_padding_mask") if k in made]
    arrays += [made.pop(k) for k in mask_names]

    def call(module, *xs):
        lib = pyrt if isinstance(module, nn.Module) else torch
        inputs, masks = xs[:len(xs) - len(mask_names)], xs[len(xs) - len(mask_names):]
        q, k, v = (inputs[0],) * 3 if self_attention else inputs
        extra = {name: (m if isinstance(m, lib.Tensor) else lib.tensor(m))
                 for name, m in zip(mask_names, masks, strict=True)}
        return module(q, k, v, **extra, **made)

    grads = [True] * (len(arrays) - len(mask_names)) + [False] * len(mask_names)
    assert_module_matches_torch(ours, theirs, arrays, call, requires_grad=grads, rtol=1e-9, atol=1e-11)


def test_multihead_attention_unbatched_and_other_kv_dims() -> None:
    theirs = torch.nn.MultiheadAttention(E, H, kdim=3, vdim=5, dtype=torch.float64)
    ours = nn.MultiheadAttention(E, H, kdim=3, vdim=5, dtype=np.float64)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    arrays = [_rand(L, E), _rand(S, 3, seed=1), _rand(S, 5, seed=2), np.array([0, 0, 0, 0, 1, 1], bool)]
    assert_module_matches_torch(ours, theirs, arrays,
                                lambda m, q, k, v, kpm: m(q, k, v, key_padding_mask=kpm),
                                requires_grad=[True, True, True, False])


def test_multihead_attention_init_and_errors() -> None:
    pyrt.manual_seed(0)
    mha = nn.MultiheadAttention(64, 8)
    bound = np.sqrt(6 / (64 + 3 * 64))  # xavier_uniform on (3E, E)
    w = mha.in_proj_weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert not mha.in_proj_bias.data.any() and not mha.out_proj.bias.data.any()
    with pytest.raises(ValueError, match="multiple of num_heads"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match=r"key_padding_mask is \(3, 4\) bool; expected \(3, 5\)"):
        mha_small = nn.MultiheadAttention(4, 2)
        x = pyrt.ones(5, 3, 4)
        mha_small(x, x, x, key_padding_mask=pyrt.tensor(np.zeros((3, 4), bool)))


def test_multihead_attention_dropout_only_while_training() -> None:
    mha = nn.MultiheadAttention(8, 2, dropout=0.5).double()
    x = pyrt.tensor(_rand(4, 2, 8))
    mha.eval()
    first, second = mha(x, x, x)[0].data, mha(x, x, x)[0].data
    assert np.array_equal(first, second)
    mha.train()
    assert not np.allclose(mha(x, x, x)[0].data, first)


# --- TransformerEncoderLayer -----------------------------------------------------------------

D, FF = 16, 32


def _layer_pair(**kwargs):
    kwargs = {"dim_feedforward": FF, "dropout": 0.0, **kwargs}
    theirs = torch.nn.TransformerEncoderLayer(D, 4, dtype=torch.float64, **kwargs)
    ours = nn.TransformerEncoderLayer(D, 4, dtype=np.float64, **kwargs)
    return ours, theirs


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_layer_matches_torch(norm_first, activation, batch_first) -> None:
    ours, theirs = _layer_pair(norm_first=norm_first, activation=activation, batch_first=batch_first)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = _rand(*((3, 7, D) if batch_first else (7, 3, D)))
    causal = np.triu(np.full((7, 7), -np.inf), 1)
    padding = np.zeros((3, 7), bool)
    padding[1, -3:] = True
    assert_module_matches_torch(ours, theirs, [x, causal, padding],
                                lambda m, x, mask, kpm: m(x, src_mask=mask, src_key_padding_mask=kpm,
                                                          is_causal=True),
                                requires_grad=[True, False, False])


def test_encoder_layer_unbatched_and_callable_activation() -> None:
    ours, theirs = _layer_pair(activation=F.silu)
    theirs.activation = TF.silu
    assert_module_matches_torch(ours, theirs, [_rand(6, D)])


def test_prenorm_gelu_causal_block_trains_like_torch() -> None:
    """The must-show: same weights, same data, same SGD steps -> the same losses and weights.

    The task needs the causal attention: predict the running mean of a sequence's inputs
    (position t may look at positions <= t only).
    """
    ours, theirs = _layer_pair(norm_first=True, activation="gelu", batch_first=True)
    copy_torch_weights(ours, theirs)
    head, t_head = nn.Linear(D, 1, dtype=np.float64), torch.nn.Linear(D, 1, dtype=torch.float64)
    copy_torch_weights(head, t_head)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 10, D))
    y = np.cumsum(x[..., :1], axis=1) / np.arange(1, 11)[:, None]
    params = [*ours.parameters(), *head.parameters()]
    t_params = [*theirs.parameters(), *t_head.parameters()]
    opt, t_opt = pyrt.optim.SGD(params, lr=0.1), torch.optim.SGD(t_params, lr=0.1)
    losses, t_losses = [], []
    for _ in range(25):
        mask = pyrt.tensor(np.triu(np.ones((10, 10), bool), 1))
        out = head(ours(pyrt.tensor(x), is_causal=True, src_mask=mask))
        loss = F.mse_loss(out, pyrt.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_mask = torch.nn.Transformer.generate_square_subsequent_mask(10, dtype=torch.float64)
        t_out = t_head(theirs(torch.tensor(x), src_mask=t_mask, is_causal=True))
        t_loss = TF.mse_loss(t_out, torch.tensor(y))
        t_opt.zero_grad()
        t_loss.backward()
        t_opt.step()
        losses.append(loss.item())
        t_losses.append(t_loss.item())
    np.testing.assert_allclose(losses, t_losses, rtol=1e-9)
    assert losses[-1] < 0.5 * losses[0]  # it learned
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


def test_encoder_layer_with_dropout_trains_in_float32() -> None:
    pyrt.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, 4, FF, dropout=0.1, activation="gelu", batch_first=True,
                                       norm_first=True)
    head = nn.Linear(D, 1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 10, D)).astype(np.float32)
    y = (np.cumsum(x[..., :1], axis=1) / np.arange(1, 11)[:, None]).astype(np.float32)
    opt = pyrt.optim.Adam([*layer.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(60):
        loss = F.mse_loss(head(layer(pyrt.tensor(x), is_causal=True)), pyrt.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert layer(pyrt.tensor(x)).dtype == np.float32


def test_attention_modules_gradcheck_every_parameter() -> None:
    """Finite differences through every parameter, not only the comparison with torch."""
    mha = nn.MultiheadAttention(4, 2, dtype=np.float64)
    x = pyrt.tensor(_rand(3, 2, 4), requires_grad=True)
    kv = pyrt.tensor(_rand(5, 2, 4, seed=1), requires_grad=True)
    mask = pyrt.tensor(np.triu(np.ones((3, 5), bool), 2))
    assert pyrt.gradcheck(lambda x, kv, *_: mha(x, kv, kv, attn_mask=mask)[0], [x, kv, *mha.parameters()])
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation="gelu", norm_first=True,
                                       dtype=np.float64)
    assert pyrt.gradcheck(lambda x, *_: layer(x, is_causal=True), [x, *layer.parameters()])


@pytest.mark.parametrize("with_norm", [True, False])
def test_encoder_stack_matches_torch(with_norm) -> None:
    kwargs = {"dim_feedforward": FF, "dropout": 0.0, "activation": "gelu", "batch_first": True,
              "norm_first": True}
    theirs = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(D, 4, dtype=torch.float64, **kwargs), num_layers=2,
        norm=torch.nn.LayerNorm(D, dtype=torch.float64) if with_norm else None, enable_nested_tensor=False)
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 4, dtype=np.float64, **kwargs), num_layers=2,
                                 norm=nn.LayerNorm(D, dtype=np.float64) if with_norm else None)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    layers = ours.layers
    assert layers[0].linear1.weight is not layers[1].linear1.weight  # copies, not one shared layer
    causal = np.triu(np.full((7, 7), -np.inf), 1)
    assert_module_matches_torch(ours, theirs, [_rand(3, 7, D), causal],
                                lambda m, x, mask: m(x, mask=mask, is_causal=True),
                                requires_grad=[True, False])
