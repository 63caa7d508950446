#!/usr/bin/python3
"""PyTorch peer of `betctl bench train`: times one training step (permutation ids drawn,
forward, MDL loss, backward, AdamW step) of the model of docs/model.md, as defined by
tests/reference/bet_reference.py, in eager mode on the CPU. Prints one JSON object.

  bench/peer/train_peer.py [--layer bet|standard] [--d-model 256] [--layers 4] [--heads 4]
      [--seq 128] [--batch 32] [--threads N] [--native] ...   (--help for all flags)

--native (standard layer only) also times PyTorch's own nn.TransformerEncoderLayer stack of
the same size (it has no RoPE: with pe=rope it runs without positional encoding).

On a GPU (PyTorch 2.x): --device cuda runs there (synchronised before each step's clock
stops), --bf16 under torch.autocast(bfloat16) as betctl's --precision bf16, and --compile
also times torch.compile of the same model ("compiled" in the output).
"""
import contextlib
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import bet_reference as R  # noqa: E402


class NativeModel(nn.Module):
    """Embedding -> nn.TransformerEncoder (post-LN, ReLU) -> the same heads."""

    def __init__(self, a):
        super().__init__()
        self.task, self.causal = a.task, a.task == "lm"
        self.embed = nn.Embedding(a.vocab, a.d_model)
        layer = nn.TransformerEncoderLayer(a.d_model, a.heads, 4 * a.d_model, a.dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, a.layers, enable_nested_tensor=False)
        self.head = nn.Linear(a.d_model, a.classes if a.task == "classify" else a.vocab)
        self.drop = nn.Dropout(a.dropout)
        self.pe = a.pe

    def forward(self, ids, mask, perm_pos=None):
        x = self.embed(ids)
        if self.pe == "sinusoidal":
            x = x + R.sinusoidal_table(ids.shape[1], x.shape[-1], x.dtype)
        x = self.drop(x)
        S = ids.shape[1]
        am = torch.triu(torch.full((S, S), float("-inf")), 1) if self.causal else None
        x = self.encoder(x, mask=am, src_key_padding_mask=(mask == 0))
        if self.task == "classify":
            return {"logits": self.head(R.masked_token_mean(x, mask))}
        return {"logits": self.head(x)}


def on_cpu():
    """Factories default to the CPU inside (the CPU generator draws there)."""
    return torch.device("cpu") if hasattr(torch, "set_default_device") else contextlib.nullcontext()


def make_batch(a, gen):
    with on_cpu():
        ids = torch.randint(3, a.vocab, (a.batch, a.seq), generator=gen)
        mask = torch.ones(a.batch, a.seq, dtype=torch.long)
        if a.task == "lm":
            ids[:, 0] = R.BOS
            targets = torch.randint(3, a.vocab, (a.batch, a.seq), generator=gen)
        else:
            targets = torch.randint(0, a.classes, (a.batch,), generator=gen)
    return ids.to(a.device), mask, targets.to(a.device)


def sync(a):
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()


def time_training(model, a, draw_perms):
    gen = torch.Generator().manual_seed(a.seed)
    ids, cpu_mask, targets = make_batch(a, gen)
    mask = cpu_mask.to(a.device)
    cast = (torch.autocast(device_type=a.device.split(":")[0], dtype=torch.bfloat16) if a.bf16
            else contextlib.nullcontext())
    crit = R.MDLRegularizedLoss(a.mdl_beta)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    model.train()
    times, active = [], 0
    for step in range(a.warmup + a.steps):
        sync(a)
        t0 = time.perf_counter()
        pp = None
        if draw_perms:
            with on_cpu():
                pp = R.draw_perm_pos(a.layers, a.k_permutations, cpu_mask, a.task == "lm", a.max_len, gen)
            pp = pp.to(a.device)
        with cast:
            out = model(ids, mask, pp)
            res = crit(out["logits"], targets, mask)
        opt.zero_grad(set_to_none=True)
        res["loss"].backward()
        opt.step()
        sync(a)
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(dt)
            active += int(res["mdl_active"])
    med = statistics.median(times)
    return {"ms_per_step": med * 1e3, "ms_per_step_mean": statistics.mean(times) * 1e3,
            "ms_per_step_min": min(times) * 1e3, "tokens_per_s": a.batch * a.seq / med,
            "steps": a.steps, "warmup": a.warmup, "mdl_active_steps": active,
            "final_loss": float(res["loss"].item()),
            "parameters": sum(p.numel() for p in model.parameters())}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", choices=("bet", "standard"), default="bet")
    p.add_argument("--task", choices=("classify", "lm"), default="classify",
                   help="classify: bidirectional, masked-mean pool; lm: causal")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=259, help="byte tokenizer: 3 specials + 256")
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--pe", choices=R.PE_KINDS, default="rope")
    p.add_argument("--k-permutations", type=int, default=3)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--mdl-beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--native", action="store_true",
                   help="also time nn.TransformerEncoderLayer (layer standard only)")
    p.add_argument("--skip-reference", action="store_true", help="with --native: time only it")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N]")
    p.add_argument("--bf16", action="store_true", help="torch.autocast(bfloat16) for forward and loss")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model) (PyTorch 2.x)")
    a = p.parse_args()
    if a.device != "cpu":
        if not hasattr(torch, "set_default_device"):
            p.error("--device %s needs PyTorch 2.x (this is %s)" % (a.device, torch.__version__))
        # The reference model creates tables inside forward without a device.
        torch.set_default_device(a.device)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    a.max_len = max(a.max_len, a.seq)
    torch.manual_seed(a.seed)

    result = {"peer": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "config": {k: getattr(a, k) for k in ("layer", "task", "d_model", "layers", "heads", "seq",
                                                   "batch", "vocab", "classes", "pe", "k_permutations",
                                                   "max_len", "dropout", "mdl_beta", "lr", "weight_decay")},
              "step": "perm ids + forward + MDL loss + backward + AdamW",
              "dtype": "bfloat16 autocast" if a.bf16 else "float32", "device": a.device}
    if not a.skip_reference:
        model = R.BETModel(a.vocab, a.d_model, a.heads, a.layers, a.task, a.classes, a.layer, a.pe,
                           a.k_permutations, a.max_len, a.dropout)
        needs_perms = a.layer == "bet" and a.pe == "rope" and a.k_permutations > 0
        result.update(time_training(model, a, needs_perms))
        if a.compile:
            try:
                fresh = R.BETModel(a.vocab, a.d_model, a.heads, a.layers, a.task, a.classes, a.layer, a.pe,
                                   a.k_permutations, a.max_len, a.dropout)
                result["compiled"] = time_training(torch.compile(fresh), a, needs_perms)
            except Exception as e:  # noqa: BLE001 - reported, the eager numbers stand
                result["compiled"] = {"error": "%s: %s" % (type(e).__name__, e)}
    if a.native:
        if a.layer != "standard":
            p.error("--native needs --layer standard")
        result["native"] = time_training(NativeModel(a), a, False)
        result["native"]["impl"] = "nn.TransformerEncoderLayer" + (" (no RoPE)" if a.pe == "rope" else "")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
