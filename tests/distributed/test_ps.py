"""Parameter servers (SSP, async SGD) and local SGD under real mpiexec at 3 and 4 ranks."""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpirun import WORKERS, mpiexec, run_workers

from pyrt.distributed.ps.protocol import shard_bounds

LINE = re.compile(r"^(worker|server) rank (\d+) staleness=(\w+) (.*)$", re.M)


def _parse(out: str) -> dict[str, dict[str, list[dict[str, float]]]]:
    """{staleness: {"worker": [fields...], "server": [fields...]}} from the worker script's lines."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for role, _rank, staleness, rest in LINE.findall(out):
        fields = {k: float(v) for k, v in (kv.split("=") for kv in rest.split())}
        runs.setdefault(staleness, {"worker": [], "server": []})[role].append(fields)
    return runs


@pytest.mark.parametrize(("nprocs", "num_servers"), [(4, 1), (3, 1), (4, 2)])
def test_ssp_bound_no_lost_update_and_synchronous_equivalence(nprocs: int, num_servers: int) -> None:
    out = run_workers(nprocs, "ps_checks.py", str(num_servers), timeout=120).stdout
    runs = _parse(out)
    assert sorted(runs) == ["0", "1", "3", "None"], out
    for staleness, roles in runs.items():
        workers, servers = roles["worker"], roles["server"]
        assert len(workers) == nprocs - num_servers and len(servers) == num_servers, out
        pushed = sum(w["pushes"] for w in workers)
        for server in servers:  # every push applied once, counted by workers and servers apart
            assert server["applied"] == server["reported"] == pushed, (staleness, out)
        fast_leads = [w["max_lead"] for w in workers if not w["slow"]]
        if staleness == "None":
            assert max(fast_leads) > 3, out  # nothing held the fast workers back
            assert max(s["max_staleness"] for s in servers) > 3, out
        else:
            # The fast workers ran ahead of the slow one exactly as far as the bound allows.
            assert max(fast_leads) == int(staleness), (staleness, out)
            assert all(s["max_staleness"] <= int(staleness) for s in servers), out
        if staleness == "0":
            assert all(s["steps"] == pushed / len(workers) for s in servers), out  # one step per clock
        else:
            assert all(s["steps"] == pushed for s in servers), out  # one step per push
    assert out.count("equivalence sgd ok") == out.count("equivalence adam ok") == nprocs, out
    assert out.count("local sgd ok syncs=2") == nprocs, out
    assert out.count("misuse ok") == nprocs, out
    assert out.count("overlap ok") == nprocs - num_servers, out
    assert out.count("flow control ok") == nprocs - num_servers, out
    assert out.count("busy server ok") == nprocs, out
    assert out.count("shutdown ok") == nprocs, out


@pytest.mark.parametrize(("frozen", "blamed"), [
    ("worker", r"ParameterServer \(rank 3\): worker rank 1 has sent nothing for"),
    ("exit", r"ParameterServer \(rank 3\): worker rank 1 has sent nothing for"),
    ("server", r"Worker \(rank \d\): waited [\d.]+ s for parameters from the parameter servers "
               r"\(ranks \[3\]\)"),
])
def test_a_frozen_or_exited_rank_ends_the_job_naming_it(frozen: str, blamed: str) -> None:
    start = time.monotonic()
    if frozen == "exit":  # without the flag mpiexec itself would end the job when rank 1 exits
        result = subprocess.run([mpiexec(), "-disable-auto-cleanup", "-n", "4", sys.executable,
                                 str(WORKERS / "ps_failures.py"), frozen], capture_output=True, text=True,
                                timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    else:
        result = run_workers(4, "ps_failures.py", frozen, timeout=60, check=False)
    assert result.returncode != 0, result.stdout
    assert re.search(blamed, result.stderr), result.stderr
    assert "unreachable" not in result.stdout
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("numel", [0, 1, 7, 50_890])
@pytest.mark.parametrize("servers", [1, 2, 3])
def test_shards_cover_the_parameters_and_balance_to_one_element(numel: int, servers: int) -> None:
    bounds = shard_bounds(numel, servers)
    assert bounds[0][0] == 0 and bounds[-1][1] == numel
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "async_ps.py"


def test_example_trains_the_digits_mlp_and_reports_staleness() -> None:
    assert EXAMPLE.read_text().startswith("# Run: mpiexec -n 4 python examples/async_ps.py")
    out = run_workers(4, str(EXAMPLE), "--staleness", "2", "--epochs", "4", timeout=120).stdout
    accuracy = re.search(r"^test accuracy: ([\d.]+)$", out, re.M)
    assert accuracy is not None and float(accuracy.group(1)) >= 0.93, out
    histogram = re.search(r"staleness \(clocks\) -> pushes: (\{.*\})", out)
    assert histogram is not None, out
    counts = ast.literal_eval(histogram.group(1))
    assert max(counts) <= 2 and sum(counts.values()) == 3 * 4 * 30, out  # 3 workers, 30 steps an epoch


def test_async_bench_quick_writes_records_and_figure(run_python, tmp_path) -> None:
    """--quick: SSP s=1 and local SGD, 2 epochs each, one launch each (about 10 s)."""
    out, plots = tmp_path / "bench.json", tmp_path / "plots"
    run_python("-m", "pyrt.bench", "async", "--quick", "--json", str(out), "--plot-dir", str(plots),
               timeout=300)
    records = {r["case"]: r for r in json.loads(out.read_text())}
    assert sorted(records) == ["local sgd", "ps s=1"]
    assert records["ps s=1"]["staleness_max"] <= 1 and records["ps s=1"]["trainers"] == 3
    assert records["local sgd"]["staleness_max"] == 7 and records["local sgd"]["trainers"] == 4
    assert all(r["final_accuracy"] > 0.8 for r in records.values())
    assert [p.name for p in plots.iterdir()] == ["async_training.png"]
