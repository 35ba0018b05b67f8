"""Checkpoints with exact resume, and the DDP/FSDP wrapping they have to see through.

A checkpoint is one ``torch.save`` file written atomically (temp file + rename) by rank 0: full
model and optimizer state, loop state (step, elapsed time, tokens, loss history) and RNG states.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def wrap_parallel(model: torch.nn.Module, world: int, device: torch.device, fsdp: bool) -> torch.nn.Module:
    if world == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        # A HF causal LM: .model is its decoder, .layers its blocks (Module.__getattr__ types them loosely).
        decoder = cast(torch.nn.Module, model.model)
        for layer in cast(torch.nn.ModuleList, decoder.layers):  # per decoder block, then the rest
            fully_shard(layer)
        fully_shard(model)
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_fsdp(model: torch.nn.Module) -> bool:
    return any(type(m).__name__.startswith("FSDP") for m in model.modules())


def _full_states(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(model).state_dict(), opt.state_dict()


def full_model_state(model: torch.nn.Module) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_checkpoint(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict, rank: int = 0, world: int = 1
) -> None:
    msd, osd = _full_states(model, opt)  # collective under FSDP: every rank must call it
    if rank == 0:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
        tmp = path.with_suffix(".tmp")
        loop_state = {k: v for k, v in state.items() if k != "model"}
        torch.save({"model": msd, "optimizer": osd, "state": loop_state, "rng": rng}, tmp)
        os.replace(tmp, path)
    if world > 1:
        dist.barrier()


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            model,
            opt,
            model_state_dict=ck["model"],
            optim_state_dict=ck["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
    else:
        unwrap(model).load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    torch.set_rng_state(ck["rng"]["torch"])
    random.setstate(ck["rng"]["python"])
    np.random.set_state(ck["rng"]["numpy"])
    return ck["state"]
