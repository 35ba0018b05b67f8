"""Data-parallel training (2 CPU processes, gloo) must match one process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[3]


def run(out: Path, nproc: int, batch: int, accum: int, *extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(WORKER),
        str(out),
        str(batch),
        str(accum),
        *extra,
    ]
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), str(batch), str(accum), *extra]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=240, capture_output=True)
    return torch.load(out)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run(
        tmp_path_factory.mktemp("single") / "single.pt", 1, 4, 2
    )  # global batch 8 = 4 rows x 2 micro-batches


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, mode, single):
    extra = ["--fsdp"] if mode == "fsdp" else []
    multi = run(tmp_path / "multi.pt", 2, 4, 1, *extra)  # global batch 8 = 4 rows x 2 processes
    for s_loss, m_loss in zip(single["history"], multi["history"], strict=True):
        assert s_loss[1] == pytest.approx(m_loss[1], rel=1e-4)
    assert single["val"][-1][1] == pytest.approx(multi["val"][-1][1], rel=1e-4)
    for name, w in single["weights"].items():
        torch.testing.assert_close(multi["weights"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    assert any(not torch.equal(w, multi["init"][k]) for k, w in multi["weights"].items())  # it did train
