"""Tensor-parallel layers on a tp group of every rank vs their serial twins (float64).

Each check builds the serial layer and the tensor-parallel one from the same
seed, runs both on the same input, and compares outputs and every gradient
(the parallel layer's parameters against the matching slice of the serial
ones). Communication is counted by the runtime (``CommCounter``) and compared
with the analytic count. Bad inputs must raise errors naming shapes and ranks.

Run: mpiexec -n 4 python tests/distributed/workers/tp_layers.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.distributed.agreement import CollectiveMismatchError
from pyrt.distributed.functional import (
    CommCounter,
    copy_to_parallel,
    gather_from_parallel,
    reduce_from_parallel,
    scatter_to_parallel,
)
from pyrt.distributed.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelMLP,
    VocabParallelEmbedding,
    pad_vocab_size,
    vocab_parallel_cross_entropy,
)
from pyrt.nn import functional as F

RTOL, ATOL = 1e-10, 1e-12


def close(actual, expected, what: str) -> None:
    actual = actual.data if isinstance(actual, pyrt.Tensor) else actual
    expected = expected.data if isinstance(expected, pyrt.Tensor) else expected
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL,
                               err_msg=f"rank {dist.get_rank()}: {what}")


def block(n: int, rank: int, size: int) -> slice:
    return slice(rank * n // size, (rank + 1) * n // size)


def expect_error(kind: type[Exception], words: list[str], fn) -> None:
    try:
        fn()
    except kind as exc:
        message = str(exc)
        missing = [w for w in words if w not in message]
        assert not missing, f"error message {message!r} lacks {missing}"
        return
    raise AssertionError(f"expected {kind.__name__} mentioning {words}")


def check_conjugates(tp, rank: int, size: int) -> None:
    rng = np.random.default_rng(7)
    full = rng.standard_normal((3, 4 * size))                    # the same on every rank
    mine = block(4 * size, rank, size)
    per_rank = rng.standard_normal((size, 3, 4 * size))          # rank r's own tensor: per_rank[r]
    with CommCounter() as counter:
        # copy: identity forward, gradients summed backward.
        x = pyrt.tensor(full, requires_grad=True)
        y = copy_to_parallel(x, tp)
        close(y, full, "copy_to_parallel forward")
        y.backward(per_rank[rank])
        close(x.grad, per_rank.sum(axis=0), "copy_to_parallel backward")
        # reduce: summed forward, identity backward.
        x = pyrt.tensor(per_rank[rank].copy(), requires_grad=True)
        y = reduce_from_parallel(x, tp)
        close(y, per_rank.sum(axis=0), "reduce_from_parallel forward")
        y.backward(full)
        close(x.grad, full, "reduce_from_parallel backward")
        # scatter: my slice forward, gathered backward.
        x = pyrt.tensor(full, requires_grad=True)
        y = scatter_to_parallel(x, tp)
        close(y, full[:, mine], "scatter_to_parallel forward")
        y.backward(per_rank[:, :, mine][rank])
        close(x.grad, np.concatenate([per_rank[r][:, block(4 * size, r, size)] for r in range(size)], -1),
              "scatter_to_parallel backward")
        # gather: concatenated forward, my slice backward.
        x = pyrt.tensor(per_rank[rank][:, mine].copy(), requires_grad=True)
        y = gather_from_parallel(x, tp)
        close(y, np.concatenate([per_rank[r][:, block(4 * size, r, size)] for r in range(size)], -1),
              "gather_from_parallel forward")
        y.backward(full)
        close(x.grad, full[:, mine], "gather_from_parallel backward")
    moved = size > 1
    assert counter.calls == ({"all_reduce": 2, "all_gather": 2} if moved else {}), counter
    if moved:
        assert counter.bytes["all_reduce"] == 2 * full.nbytes, counter
        assert counter.bytes["all_gather"] == 2 * full.nbytes, counter   # gathered sizes
    if size > 1:
        expect_error(ValueError, ["scatter_to_parallel", f"{size} ranks", "(3, 1)"],
                     lambda: scatter_to_parallel(pyrt.ones(3, 1), tp))


def serial_twin_linear(seed: int, fan_in: int, fan_out: int) -> nn.Linear:
    pyrt.manual_seed(seed)
    return nn.Linear(fan_in, fan_out, dtype=np.float64)


def check_column_and_row(tp, rank: int, size: int) -> None:
    rng = np.random.default_rng(1)
    x_full = rng.standard_normal((2, 3, 5))                      # (b, s, in): 5 is prime
    out = 4 * size
    projection = rng.standard_normal((2, 3, out))
    for gather in (True, False):
        serial = serial_twin_linear(11, 5, out)
        pyrt.manual_seed(11)
        layer = ColumnParallelLinear(5, out, gather_output=gather, group=tp, dtype=np.float64)
        xs, xp = pyrt.tensor(x_full, requires_grad=True), pyrt.tensor(x_full, requires_grad=True)
        ys, yp = serial(xs), layer(xp)
        cols = block(out, rank, size)
        if gather:
            close(yp, ys, "column (gathered) output")
            (yp * pyrt.tensor(projection)).sum().backward()
        else:
            close(yp, ys.data[..., cols], "column (sharded) output")
            (yp * pyrt.tensor(projection[..., cols])).sum().backward()
        (ys * pyrt.tensor(projection)).sum().backward()
        close(xp.grad, xs.grad, f"column input grad (gather_output={gather})")
        close(layer.weight.grad, serial.weight.grad.data[cols], "column weight grad")
        close(layer.bias.grad, serial.bias.grad.data[cols], "column bias grad")

    in_features = 4 * size
    x_full = rng.standard_normal((2, 3, in_features))
    projection = rng.standard_normal((2, 3, 7))
    for parallel_input in (False, True):
        serial = serial_twin_linear(12, in_features, 7)
        pyrt.manual_seed(12)
        layer = RowParallelLinear(in_features, 7, input_is_parallel=parallel_input, group=tp,
                                  dtype=np.float64)
        cols = block(in_features, rank, size)
        xs = pyrt.tensor(x_full, requires_grad=True)
        xp = pyrt.tensor(x_full[..., cols].copy() if parallel_input else x_full, requires_grad=True)
        ys, yp = serial(xs), layer(xp)
        close(yp, ys, f"row output (input_is_parallel={parallel_input})")
        (ys * pyrt.tensor(projection)).sum().backward()
        (yp * pyrt.tensor(projection)).sum().backward()
        close(xp.grad, xs.grad.data[..., cols] if parallel_input else xs.grad, "row input grad")
        close(layer.weight.grad, serial.weight.grad.data[:, cols], "row weight grad")
        close(layer.bias.grad, serial.bias.grad, "row bias grad")


def check_mlp_and_comm_volume(tp, rank: int, size: int) -> None:
    b, s, h, ffn = 2, 3, 8, 8 * size
    pyrt.manual_seed(21)
    serial = nn.Sequential(nn.Linear(h, ffn, dtype=np.float64), nn.ReLU(),
                           nn.Linear(ffn, h, dtype=np.float64))
    pyrt.manual_seed(21)
    block_ = TensorParallelMLP(h, ffn, group=tp, dtype=np.float64)
    x_full = np.random.default_rng(2).standard_normal((b, s, h))
    xs, xp = pyrt.tensor(x_full, requires_grad=True), pyrt.tensor(x_full, requires_grad=True)
    projection = pyrt.tensor(np.random.default_rng(3).standard_normal((b, s, h)))
    (serial(xs) * projection).sum().backward()
    with CommCounter() as counter:
        yp = block_(xp)
        (yp * projection).sum().backward()
    close(yp, serial(pyrt.tensor(x_full)), "mlp output")
    close(xp.grad, xs.grad, "mlp input grad")
    # An empty batch and a non-contiguous (strided) input go through too.
    y_empty = block_(pyrt.tensor(np.zeros((0, s, h)), requires_grad=True))
    assert y_empty.shape == (0, s, h)
    strided = np.random.default_rng(6).standard_normal((b, s, 2 * h))[..., ::2]
    close(block_(pyrt.tensor(strided)), serial(pyrt.tensor(strided)), "mlp output (strided input)")
    rows, cols = block(ffn, rank, size), block(ffn, rank, size)
    close(block_.fc1.weight.grad, serial[0].weight.grad.data[rows], "mlp fc1 weight grad")
    close(block_.fc1.bias.grad, serial[0].bias.grad.data[rows], "mlp fc1 bias grad")
    close(block_.fc2.weight.grad, serial[2].weight.grad.data[:, cols], "mlp fc2 weight grad")
    close(block_.fc2.bias.grad, serial[2].bias.grad, "mlp fc2 bias grad")
    # Megatron's count: one all-reduce of b*s*h forward (fc2's partial sums) and one
    # backward (fc1's input gradient); nothing at all on a group of one rank.
    analytic_calls = 2 if size > 1 else 0
    analytic_bytes = analytic_calls * b * s * h * 8
    assert counter.calls == ({"all_reduce": analytic_calls} if size > 1 else {}), counter
    assert counter.bytes.get("all_reduce", 0) == analytic_bytes, counter
    if rank == 0:
        print(f"tp={size}: parallel MLP block (b={b}, s={s}, h={h}) forward+backward counted "
              f"{counter.calls.get('all_reduce', 0)} all-reduces, "
              f"{counter.bytes.get('all_reduce', 0)} bytes; "
              f"analytic {analytic_calls} x b*s*h*8 = {analytic_bytes} bytes", flush=True)


def check_embedding_and_vocab_loss(tp, rank: int, size: int) -> None:
    vocab, dim = 10, 3
    padded = pad_vocab_size(vocab, size)
    ids = np.array([[1, 9, 4, 4, 0], [7, 2, 9, 5, 3]])
    for padding_idx in (None, 7):
        pyrt.manual_seed(31)
        serial = nn.Embedding(vocab, dim, padding_idx=padding_idx, dtype=np.float64)
        pyrt.manual_seed(31)
        emb = VocabParallelEmbedding(vocab, dim, padding_idx=padding_idx, group=tp, dtype=np.float64)
        rows = slice(emb.vocab_start_index, emb.vocab_end_index)
        assert emb.num_embeddings_padded == padded and emb.weight.shape == (padded // size, dim)
        projection = pyrt.tensor(np.random.default_rng(4).standard_normal((2, 5, dim)))
        ys, yp = serial(pyrt.tensor(ids)), emb(pyrt.tensor(ids))
        close(yp, ys, f"embedding output (padding_idx={padding_idx})")
        (ys * projection).sum().backward()
        (yp * projection).sum().backward()
        full_grad = np.zeros((padded, dim))
        full_grad[:vocab] = serial.weight.grad.data
        close(emb.weight.grad, full_grad[rows], "embedding weight grad (padding rows zero)")

    # Vocab-parallel cross-entropy vs cross_entropy of the gathered, unpadded logits.
    # The padding columns hold huge values: they must be left out of max and sum. With
    # 5 classes on 4 ranks (padded to 8) the last rank holds padding only.
    rng = np.random.default_rng(5)
    for vocab, reduction in [(10, "mean"), (10, "sum"), (10, "none"), (5, "mean")]:
        padded = pad_vocab_size(vocab, size)
        logits_full = np.full((6, padded), 1e3)
        logits_full[:, :vocab] = rng.standard_normal((6, vocab)) * 3
        target = np.array([0, 9, 3, -100, 5, 9]) % vocab
        target[3] = -100
        cols = block(padded, rank, size)
        ls = pyrt.tensor(logits_full[:, :vocab].copy(), requires_grad=True)
        lp = pyrt.tensor(logits_full[:, cols].copy(), requires_grad=True)
        serial_loss = F.cross_entropy(ls, pyrt.tensor(target), reduction=reduction)
        with CommCounter() as counter:
            loss = vocab_parallel_cross_entropy(lp, pyrt.tensor(target), vocab_size=vocab, group=tp,
                                                reduction=reduction)
        close(loss, serial_loss, f"vocab-parallel loss ({reduction})")
        weights = np.arange(1.0, 7.0) if reduction == "none" else None
        serial_loss.backward(weights)
        loss.backward(weights)
        grad_full = np.zeros((6, padded))
        grad_full[:, :vocab] = ls.grad.data
        close(lp.grad, grad_full[:, cols], f"vocab-parallel logits grad ({reduction})")
        # max, target logit, sum of exps: three all-reduces of one number per row.
        assert counter.calls == ({"all_reduce": 3} if size > 1 else {}), counter
        assert counter.bytes.get("all_reduce", 0) == (3 * 6 * 8 if size > 1 else 0), counter

    # An empty batch: nothing to average (NaN, as cross_entropy gives), nothing to differentiate.
    empty = pyrt.tensor(np.zeros((0, pad_vocab_size(10, size) // size)), requires_grad=True)
    loss = vocab_parallel_cross_entropy(empty, pyrt.tensor(np.zeros(0, dtype=np.int64)), vocab_size=10,
                                        group=tp)
    assert np.isnan(loss.item())
    loss = vocab_parallel_cross_entropy(empty, pyrt.tensor(np.zeros(0, dtype=np.int64)), vocab_size=10,
                                        group=tp, reduction="sum")
    loss.backward()
    assert loss.item() == 0 and empty.grad.shape == empty.shape
    # Every target ignored (an all-padding batch): the mean is NaN, as in PyTorch, but its
    # gradient is zero there too, not NaN that DDP would spread to every rank's weights.
    for reduction in ("mean", "none"):
        ignored = pyrt.tensor(np.ones((3, pad_vocab_size(10, size) // size)), requires_grad=True)
        loss = vocab_parallel_cross_entropy(ignored, pyrt.tensor(np.full(3, -100)), vocab_size=10,
                                            group=tp, reduction=reduction)
        loss.backward(None if reduction == "mean" else np.full(3, np.nan))
        assert (ignored.grad.data == 0).all(), f"all-ignored {reduction} gradient {ignored.grad.data}"

    # End to end, tied weights: embedding -> tanh -> logits through the same table -> loss.
    vocab, padded = 10, pad_vocab_size(10, size)
    pyrt.manual_seed(41)
    serial = nn.Embedding(vocab, dim, dtype=np.float64)
    pyrt.manual_seed(41)
    emb = VocabParallelEmbedding(vocab, dim, group=tp, dtype=np.float64)
    flat_ids, next_ids = ids.reshape(-1), np.roll(ids.reshape(-1), 1)
    hs = serial(pyrt.tensor(flat_ids)).tanh()
    F.cross_entropy(F.linear(hs, serial.weight), pyrt.tensor(next_ids)).backward()
    hp = emb(pyrt.tensor(flat_ids)).tanh()
    logits = F.linear(copy_to_parallel(hp, tp), emb.weight)
    loss = vocab_parallel_cross_entropy(logits, pyrt.tensor(next_ids), vocab_size=vocab, group=tp)
    loss.backward()
    full_grad = np.zeros((padded, dim))
    full_grad[:vocab] = serial.weight.grad.data
    close(emb.weight.grad, full_grad[emb.vocab_start_index:emb.vocab_end_index], "tied embedding grad")


def check_errors(tp, rank: int, size: int) -> None:
    if size > 1:
        expect_error(ValueError, ["ColumnParallelLinear", f"out_features={4 * size + 1}",
                                  f"{size} ranks", str(tp.global_ranks)],
                     lambda: ColumnParallelLinear(3, 4 * size + 1, group=tp))
        expect_error(ValueError, ["RowParallelLinear", f"in_features={4 * size + 1}", f"{size} ranks"],
                     lambda: RowParallelLinear(4 * size + 1, 3, group=tp))
        pyrt.manual_seed(rank)  # a different seed on every rank: the slices would not fit together
        expect_error(RuntimeError, ["drew different initial weights", "manual_seed"],
                     lambda: ColumnParallelLinear(3, 4 * size, group=tp))

        def build_or_reduce() -> None:
            if rank == 0:
                ColumnParallelLinear(3, 4 * size, group=tp)
            else:
                dist.all_reduce(np.zeros(3), group=tp)

        # One rank builds a layer while the others are in an all-reduce: every rank is told
        # which call each made (the weights check is a checked collective), none waits.
        expect_error(CollectiveMismatchError, ["rank 0 called all_gather(uint8 (20,))",
                                               f"rank {size - 1} called all_reduce(sum, float64 (3,)"],
                     build_or_reduce)
    pyrt.manual_seed(0)
    layer = RowParallelLinear(4 * size, 3, input_is_parallel=True, group=tp)
    expect_error(ValueError, ["RowParallelLinear", f"expects its 4 of {4 * size} input features",
                              "(2, 5)"], lambda: layer(pyrt.ones(2, 5)))
    emb = VocabParallelEmbedding(10, 2, group=tp)
    expect_error(IndexError, ["id 10 is out of range", "vocabulary of 10"],
                 lambda: emb(pyrt.tensor(np.array([1, 10]))))
    expect_error(IndexError, ["target 10 is out of bounds for 10 classes"],
                 lambda: vocab_parallel_cross_entropy(pyrt.ones(2, pad_vocab_size(10, size) // size),
                                                      pyrt.tensor(np.array([1, 10])), vocab_size=10,
                                                      group=tp))
    expect_error(ValueError, ["init_device_mesh", f"({size + 1},)", f"world has {size}"],
                 lambda: dist.init_device_mesh("cpu", (size + 1,)))


def main() -> None:
    dist.init_process_group()
    rank, size = dist.get_rank(), dist.get_world_size()
    mesh = dist.init_device_mesh("cpu", (size,), mesh_dim_names=("tp",))
    tp = mesh.get_group("tp")
    assert tp.global_ranks == list(range(size))
    check_conjugates(tp, rank, size)
    check_column_and_row(mesh["tp"], rank, size)      # layers take a 1-d mesh as well as a group
    check_mlp_and_comm_volume(tp, rank, size)
    check_embedding_and_vocab_loss(tp, rank, size)
    check_errors(tp, rank, size)
    print(f"rank {rank}: tp layers match serial at tp={size}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
