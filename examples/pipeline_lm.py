# Run: mpiexec -n 4 python examples/pipeline_lm.py [CORPUS] [--arch lstm|transformer] [--steps 300]
# One process, the same model and batches (the reference curve): python examples/pipeline_lm.py
"""A character-level language model (LSTM or Transformer), cut into pipeline stages and trained with 1F1B.

The corpus is Python source: by default the first ~1 MB of the standard
library's own ``.py`` files (sorted by path), which every machine with Python
has; pass a directory or a text file to read something else. The vocabulary is
the sorted set of characters seen, and each step trains on ``--batch-size``
random windows of ``--seq-len`` characters, every character predicting the next.

The model is one ``nn.Sequential``: Embedding -> 3 LSTM blocks -> Linear head,
or with ``--arch transformer`` token and position embeddings -> 3 pre-norm GELU
Transformer encoder layers with a causal mask -> LayerNorm -> Linear head.
Under ``mpiexec -n 4``, ``split_sequential`` cuts it into 4 stages (embedding
and the first block | block | block | head), one per rank, and ``Schedule1F1B``
streams ``--microbatches`` micro-batches through them; each rank's Adam (or
``--optimizer sgd``) updates its own stage. Every rank seeds the same generator, so it builds the same
initial weights and draws the same batches. Run in one process, the script
trains the unsplit model on the same batches: with equal micro-batches the mean
of the micro-batch losses is the batch's mean loss, so both runs print the same
loss curve, up to float32 rounding.

The rank holding the last stage prints ``step N loss L`` per step under a
progress bar. At the end the stages' weights are gathered onto that rank, which
runs the whole model to generate a sample, one character at a time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np
from digits_training import launched_on_ranks

import pyrt
from pyrt import nn, optim
from pyrt.nn import functional as F

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the "examples" extra; without it, no bar
    tqdm = None


class LSTMBlock(nn.Module):
    """One LSTM layer over (batch, time, features) that returns only its output sequence.

    A pipeline stage passes one tensor on; ``forward_with_state`` also takes and
    returns the (h, c) state, for generating one character at a time.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward_with_state(self, x: pyrt.Tensor, state: tuple | None = None) -> tuple[pyrt.Tensor, tuple]:
        return self.lstm(x, state)

    def forward(self, x: pyrt.Tensor) -> pyrt.Tensor:
        return self.lstm(x)[0]


class TokenAndPosition(nn.Module):
    """Character embeddings plus learned position embeddings: attention alone has no notion of order."""

    def __init__(self, vocab_size: int, embed: int, max_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, embed)
        self.positions = nn.Embedding(max_len, embed)

    def forward(self, ids: pyrt.Tensor) -> pyrt.Tensor:  # (B, T) -> (B, T, embed)
        return self.tokens(ids) + self.positions(pyrt.arange(ids.shape[1]))


class CausalBlock(nn.Module):
    """A pre-norm GELU Transformer encoder layer in which each character sees only earlier ones."""

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(embed, heads, dim_feedforward=4 * embed, dropout=0.0,
                                                activation="gelu", batch_first=True, norm_first=True)

    def forward(self, x: pyrt.Tensor) -> pyrt.Tensor:  # (B, T, embed) -> (B, T, embed)
        steps = x.shape[1]
        future = pyrt.tensor(np.triu(np.ones((steps, steps), dtype=bool), k=1))  # True: masked out
        return self.layer(x, src_mask=future, is_causal=True)


def build_model(vocab_size: int, embed: int, hidden: int, blocks: int, arch: str = "lstm",
                max_len: int = 64) -> nn.Sequential:
    """Embedding -> ``blocks`` LSTM (or causal Transformer) blocks -> a head giving next-character logits."""
    if arch == "transformer":
        layers = [TokenAndPosition(vocab_size, embed, max_len)]
        layers += [CausalBlock(embed, heads=4) for _ in range(blocks)]
        layers += [nn.LayerNorm(embed), nn.Linear(embed, vocab_size)]
        return nn.Sequential(*layers)
    layers = [nn.Embedding(vocab_size, embed)]
    layers += [LSTMBlock(embed if i == 0 else hidden, hidden) for i in range(blocks)]
    layers.append(nn.Linear(hidden, vocab_size))
    return nn.Sequential(*layers)


def sequence_loss(logits: pyrt.Tensor, targets: pyrt.Tensor) -> pyrt.Tensor:
    """Mean cross-entropy of logits (B, T, V) against the next characters (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def read_corpus(path: str, max_chars: int) -> str:
    """Up to ``max_chars`` characters of a text file, or of a directory's ``.py`` files sorted by path."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    parts, total = [], 0
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # the standard library holds a few deliberately broken files
        parts.append(text[:max_chars - total])
        total += len(parts[-1])
        if total >= max_chars:
            break
    if total == 0:
        raise SystemExit(f"no text found in {path}")
    return "".join(parts)


def random_batch(data: np.ndarray, rng: np.random.Generator, batch_size: int,
                 seq_len: int) -> tuple[pyrt.Tensor, pyrt.Tensor]:
    """``batch_size`` random windows of ``seq_len`` characters and the characters that follow each."""
    starts = rng.integers(0, len(data) - seq_len - 1, size=batch_size)
    windows = np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int64)
    return pyrt.tensor(windows[:, :-1]), pyrt.tensor(windows[:, 1:])


def generate(model: nn.Sequential, vocab: str, prompt: str, length: int, temperature: float,
             seed: int, context: int) -> str:
    """``prompt`` followed by ``length`` characters sampled from the model.

    An LSTM carries its state and reads one new character per step; a
    Transformer re-reads the last ``context`` characters (its positions end there).
    """
    index = {ch: i for i, ch in enumerate(vocab)}
    rng = np.random.default_rng(seed)
    recurrent = any(isinstance(layer, LSTMBlock) for layer in model)
    states: dict[int, tuple] = {}
    ids, out = [index[ch] for ch in prompt], []
    model.eval()
    with pyrt.no_grad():
        for _ in range(length):
            window = ids if recurrent else ids[-context:]
            x = pyrt.tensor(np.array([window], dtype=np.int64))
            for i, layer in enumerate(model):
                if isinstance(layer, LSTMBlock):
                    x, states[i] = layer.forward_with_state(x, states.get(i))
                else:
                    x = layer(x)
            logits = x.data[0, -1].astype(np.float64) / temperature
            p = np.exp(logits - logits.max())
            choice = int(rng.choice(len(vocab), p=p / p.sum()))
            ids = [choice] if recurrent else [*ids, choice]
            out.append(vocab[choice])
    model.train()
    return prompt + "".join(out)


def progress(steps: int, show: bool):
    """A tqdm bar over the steps on the reporting rank; a plain range elsewhere or without tqdm."""
    if tqdm is None or not show:
        return range(steps)
    return tqdm(range(steps), desc="train", unit="step")


def report(bar, step: int, loss: float) -> None:
    line = f"step {step} loss {loss:.6f}"
    if hasattr(bar, "set_postfix"):
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.write(line)  # above the bar (which goes to stderr), on stdout
    else:
        print(line, flush=True)


def make_optimizer(params, args: argparse.Namespace) -> optim.Optimizer:
    """Adam, or plain SGD, whose steps (unlike Adam's) scale with the gradients' size."""
    if args.optimizer == "sgd":
        return optim.SGD(params, lr=args.lr)
    return optim.Adam(params, lr=args.lr)


def train_single(model: nn.Sequential, data: np.ndarray, args: argparse.Namespace) -> None:
    """The reference: the unsplit model in one process, on the batches the pipeline sees."""
    rng = np.random.default_rng(args.seed)
    optimizer = make_optimizer(model.parameters(), args)
    bar = progress(args.steps, show=True)
    for step in bar:
        x, y = random_batch(data, rng, args.batch_size, args.seq_len)
        optimizer.zero_grad()
        loss = sequence_loss(model(x), y)
        loss.backward()
        optimizer.step()
        report(bar, step + 1, loss.item())


def train_pipelined(model: nn.Sequential, data: np.ndarray, args: argparse.Namespace) -> bool:
    """1F1B over one stage per rank; returns whether this rank holds the last stage, now the whole model."""
    import pyrt.distributed as dist
    from pyrt.distributed.pipelining import (
        PipelineStage,
        Schedule1F1B,
        partition_sequential,
        split_sequential,
    )

    rank, world = dist.get_rank(), dist.get_world_size()
    if not 2 <= world <= len(model):
        raise SystemExit(f"the model's {len(model)} layers make 2 to {len(model)} stages; got {world} ranks")
    stage = PipelineStage(split_sequential(model, world), rank, world)
    schedule = Schedule1F1B(stage, n_microbatches=args.microbatches, loss_fn=sequence_loss)
    optimizer = make_optimizer(stage.submodule.parameters(), args)
    if stage.is_last:
        layers, cuts = [type(layer).__name__ for layer in model], [0]
        for count in partition_sequential(model, world):
            cuts.append(cuts[-1] + count)
        parts = [", ".join(layers[a:b]) for a, b in itertools.pairwise(cuts)]
        print(f"{world} stages: " + " | ".join(parts))
        print(f"{args.microbatches} micro-batches of {args.batch_size // args.microbatches} windows per step")

    rng = np.random.default_rng(args.seed)
    bar = progress(args.steps, show=stage.is_last)
    for step in bar:
        x, y = random_batch(data, rng, args.batch_size, args.seq_len)  # the same batch on every rank
        optimizer.zero_grad()
        if stage.is_first:
            schedule.step(x)
        elif stage.is_last:
            losses: list[pyrt.Tensor] = []
            schedule.step(target=y, losses=losses)
            report(bar, step + 1, float(np.mean([loss.item() for loss in losses])))
        else:
            schedule.step()
        optimizer.step()

    # Generation needs every layer: gather the trained stages' weights onto the last stage's rank.
    weights = {name: t.data for name, t in stage.submodule.state_dict().items()}
    gathered = stage.group.comm.gather(weights, root=world - 1)
    if stage.is_last:
        model.load_state_dict({name: array for part in gathered for name, array in part.items()})
    return stage.is_last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=os.path.dirname(os.__file__),
                        help="a text file, or a directory whose .py files are read "
                             "(default: the standard library)")
    parser.add_argument("--max-chars", type=int, default=1_000_000, help="read at most this much text")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="windows per step, over all micro-batches")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--microbatches", type=int, default=4)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--arch", choices=["lstm", "transformer"], default="lstm")
    parser.add_argument("--blocks", type=int, default=3, help="LSTM or Transformer blocks")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--sample-length", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    if args.batch_size % args.microbatches:
        raise SystemExit(f"--batch-size {args.batch_size} must divide into {args.microbatches} equal "
                         "micro-batches (then their mean loss is the batch's)")

    text = read_corpus(args.corpus, args.max_chars)
    vocab = "".join(sorted(set(text)))
    index = {ch: i for i, ch in enumerate(vocab)}
    missing = sorted(set(args.prompt) - set(index))
    if missing:
        raise SystemExit(f"--prompt has characters the corpus never shows: {missing}")
    data = np.array([index[ch] for ch in text], dtype=np.int32)
    pyrt.manual_seed(args.seed)  # the same initial weights on every rank and in one process
    model = build_model(len(vocab), args.embed, args.hidden, args.blocks, args.arch, args.seq_len)

    pipelined = launched_on_ranks() > 1
    if pipelined:
        import pyrt.distributed as dist  # only now: single-process runs never load MPI

        dist.init_process_group("mpi")
        reporting = dist.get_rank() == dist.get_world_size() - 1
    else:
        reporting = True
    if reporting:
        print(f"corpus: {len(text):,} characters from {args.corpus}, vocabulary of {len(vocab)}")
    start = time.perf_counter()
    if pipelined:
        has_model = train_pipelined(model, data, args)
    else:
        train_single(model, data, args)
        has_model = True
    if has_model:
        seconds = time.perf_counter() - start
        per_step = 1e3 * seconds / max(args.steps, 1)
        print(f"trained {args.steps} steps in {seconds:.1f}s ({per_step:.0f} ms/step)")
        sample = generate(model, vocab, args.prompt, args.sample_length, args.temperature, args.seed,
                          context=args.seq_len)
        print(f"sample:\n{sample}\n-- end of sample")
    if pipelined:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
