"""Helper for test_ddp.py: train the tiny model a few steps and save the weights.

torchrun --nproc_per_node 2 tests/training/model/ddp_worker.py OUT.pt BATCH ACCUM [--fsdp]
"""

import sys

import torch
from transformers import LlamaForCausalLM

from training.model.chat_format import train_bpe
from training.model.encoding import Specials
from training.model.loop import TrainArgs, train
from training.model.presets import Preset, model_config

out, batch, accum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fsdp = "--fsdp" in sys.argv
tok = train_bpe(["hello there how are you", "fine thanks and you"] * 10, vocab_size=300, model_max_length=32)
sp = Specials(tok)
torch.manual_seed(0)
model = LlamaForCausalLM(model_config(Preset(300, 2, 32, 2, 64, 32), len(tok), sp.bos, sp.end, sp.pad))
g = torch.Generator().manual_seed(1)
x = torch.randint(7, len(tok), (64, 32), generator=g)
y = x.clone()
y[::3, :10] = -100  # uneven scored-token counts across rows and processes
args = TrainArgs(
    out_dir=out + ".run",
    max_steps=4,
    batch_size=batch,
    grad_accum=accum,
    dtype="fp32",
    eval_every=2,
    eval_batches=2,
    ckpt_every=0,
    warmup_steps=1,
    threads=1,
    lr=1e-2,
    fsdp=fsdp,
)
init = {k: v.detach().clone() for k, v in model.state_dict().items()}
state = train(model, (x, y), (x[:16], y[:16]), args)
if state["rank"] == 0:
    sd = state["state_dict"] if state["state_dict"] is not None else state["model"].state_dict()
    torch.save({"weights": sd, "init": init, "history": state["history"], "val": state["val"]}, out)
