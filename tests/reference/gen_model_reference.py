#!/usr/bin/python3
"""Writes the model parity data tests/reference/model/*.json from bet_reference.py.

Run from anywhere: tests/reference/gen_model_reference.py  (deterministic: same torch, same
files). Everything is computed in float64, dropout off (eval mode), so a difference is the
engine's, not the reference's. Each file is one case (a model, a batch, a loss):

  {layer}_L{n_layers}_{task}_{pe}[_tied].json

JSON schema (version "bet-model-reference/1"). A *tensor* is {"shape": [d0, d1, ...],
"data": [...]} with data flattened row-major (C order); a scalar tensor has shape [] and
one value. Floats are rounded to 10 significant digits (relative 5e-11). Integers are JSON integers.

  schema        "bet-model-reference/1"
  case          file name without .json
  dtype         "float64"
  config        {layer: "bet"|"standard", n_layers, d_model, n_heads, vocab_size,
                 task: "classify"|"lm", attention: "bidirectional"|"causal",
                 n_classes (classify) | null, pe: "rope"|"none"|"sinusoidal"|"learned",
                 k_permutations, max_len, n_stats (m = max(3, floor(ln D))), n_harmonics,
                 tie_embeddings, dropout (0), mdl_beta (0.1), temperature,
                 cot_eps (1e-6), max_cot_length (512)}
  inputs        ids       tensor [B, S] int, 0 (PAD) at padding
                mask      tensor [B, S] int, 1 valid, 0 padding (padding only at the end)
                lengths   [n_b] ints
                perm_pos  tensor [L, k, B, S] int: position id of token t on permutation
                          path i of layer l (bidirectional: a permutation of 0..n_b-1 over
                          the valid tokens, padding keeps n_b..S-1; causal: the first S
                          entries of a random permutation of 0..max_len-1). Stored for every
                          case; the model reads them only for layer "bet" with pe "rope".
                targets   classify: tensor [B] int labels; lm: tensor [B, S] int, the target
                          of position t (padding positions hold 0 and do not count; the
                          target mask is `mask`)
  params        {name: tensor} for every entry of the model's state_dict (model.md's
                "Parameter names"; Linear weights (out, in); `temperature` is a buffer)
  outputs       embedded  tensor [B, S, D]: embedding (+ sinusoidal/learned PE), the input
                          of layer 0
                logits    tensor [B, C] (classify) or [B, S, V] (lm), already divided by
                          config.temperature
                layers    list (one per layer) of objects:
                  hidden        [B, S, D] the layer's output
                  grad_hidden   [B, S, D] d loss / d hidden (upstream gradient of the layer)
                  attn_in       [B, S, D] attention input (bet: LN1(x + stats); standard: x)
                  attn_out      [B, S, D] attention output after mixing the paths, before the
                                residual add
                  -- bet layers only --
                  alpha, beta, posterior_mean, posterior_variance, n_t   [B, S]
                  stats                [B, S, D]  st.stats
                  w                    [B, S]     mixing weight (absent when k = 0)
                  order_dispersion     [B]
                  reasoning_entropy, optimal_length                    [B, S]
                  artifact_scores      [B, S, n_harmonics]  (null for pe = none)
                  artifact_magnitude, correction_magnitude  [B]  (null for pe = none)
                grad_embedded  tensor [B, S, D]: d loss / d embedded
  loss          {loss, standard_loss, mdl_penalty, mdl_active (bool), empirical_entropy,
                 optimal_complexity, actual_complexity, compression_efficiency,
                 n_targets (int), mdl_margin (= CE - optimal, how far from the switch)}
  grads         {name: tensor} d loss / d parameter for every parameter of the model (every
                state_dict entry except `temperature`); zeros where a parameter does not
                enter (e.g. debias.* with pe = none)

The stored weights are exactly representable by their 10-digit decimals (the model was
rounded before computing), so an engine in float64 should match every output and gradient
to ~1e-9 relative; in float32 expect ~1e-4 relative on gradients.

Values at padding positions are stored but unspecified by model.md: compare valid
positions only (mask == 1), except where a quantity is defined per sequence.

The weights are the model's initialisation moved away from its special values so that every
term matters (`perturb`): embeddings N(0, 1) instead of N(0, 0.02) (tiny inputs would hide
the stats MLPs), lam and gamma U(0.6, 1.4), the prior, harmonic weights and LayerNorm
affine parameters +N(0, 0.3^2), the debiasing basis N(0, 0.5), zero-initialised biases
N(0, 0.1), temperature 1.25.
"""
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bet_reference as R  # noqa: E402

OUT_DIR = os.path.join(HERE, "model")
SCHEMA = "bet-model-reference/1"
B, S, LENGTHS = 2, 6, (6, 4)
VOCAB, N_CLASSES, MAX_LEN, K, H = 12, 3, 32, 2, 2
MDL_BETA, TEMPERATURE = 0.1, 1.25

CASES = [
    # layer, n_layers, d_model, task, pe, tied
    ("bet", 1, 16, "classify", "rope", False),
    ("bet", 1, 16, "classify", "none", False),
    ("bet", 1, 16, "lm", "rope", False),
    ("bet", 1, 16, "lm", "none", False),
    ("bet", 2, 8, "classify", "rope", False),
    ("bet", 2, 8, "classify", "none", False),
    ("bet", 2, 8, "lm", "rope", False),
    ("bet", 2, 8, "lm", "none", False),
    ("bet", 1, 8, "classify", "sinusoidal", False),
    ("bet", 1, 8, "lm", "learned", True),
    ("standard", 1, 16, "classify", "rope", False),
    ("standard", 2, 8, "lm", "rope", False),
]


def perturb(model, gen):
    with torch.no_grad():
        model.embed.weight.normal_(0.0, 1.0, generator=gen)
        for name, p in model.named_parameters():
            if name.endswith(("attn.lam", "attn.gamma")):
                p.uniform_(0.6, 1.4, generator=gen)
            elif name.endswith(("stats.prior", "harmonic_weights")) or ".norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("debias.basis.weight"):
                p.normal_(0.0, 0.5, generator=gen)
            elif name.endswith("bias") and p.abs().max() == 0:
                p.normal_(0.0, 0.1, generator=gen)
        model.temperature.fill_(TEMPERATURE)
        # Store-exact weights: the outputs are those of the rounded numbers in the file.
        for v in model.state_dict().values():
            v.copy_(torch.tensor([float("%.10g" % x) for x in v.reshape(-1).tolist()]).reshape(v.shape))


def make_inputs(task, gen):
    mask = torch.zeros(B, S, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1
    if task == "classify":
        ids = torch.randint(3, VOCAB, (B, S), generator=gen) * mask
        return ids, mask, None
    seq = torch.randint(3, VOCAB, (B, S), generator=gen)  # x_1 .. x_n
    ids = torch.cat([torch.full((B, 1), R.BOS), seq[:, :-1]], dim=1) * mask
    return ids, mask, seq * mask


def tensor(t):
    t = t.detach()
    if t.dtype in (torch.int64, torch.int32, torch.bool):
        data = [int(v) for v in t.reshape(-1).tolist()]
    else:
        data = [float("%.10g" % v) for v in t.reshape(-1).tolist()]
    return {"shape": list(t.shape), "data": data}


def number(v):
    v = v.item() if torch.is_tensor(v) else v
    return float("%.10g" % v)


def build_case(layer, n_layers, d_model, task, pe, tied, seed):
    name = f"{layer}_L{n_layers}_{task}_{pe}" + ("_tied" if tied else "")
    torch.manual_seed(seed)
    model = R.BETModel(VOCAB, d_model, H, n_layers, task, N_CLASSES, layer, pe, K, MAX_LEN,
                       dropout=0.0, tie_embeddings=tied).double().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    perturb(model, gen)
    # Draw data until the MDL switch is clearly on one side (the parity test must not flip).
    for attempt in range(50):
        ids, mask, targets = make_inputs(task, gen)
        if task == "classify":
            targets = torch.randint(0, N_CLASSES, (B,), generator=gen)
        perm_pos = R.draw_perm_pos(n_layers, K, mask, task == "lm", MAX_LEN, gen)
        model.zero_grad()
        out = model(ids, mask, perm_pos)
        res = R.MDLRegularizedLoss(MDL_BETA)(out["logits"], targets, mask)
        margin = (res["actual_complexity"] - res["optimal_complexity"]).item()
        if abs(margin) > 0.05:
            break
    else:
        raise RuntimeError(f"{name}: no batch away from the MDL switch")
    for h in out["hidden"]:
        h.retain_grad()
    out["embedded"].retain_grad()
    res["loss"].backward()

    layers = []
    for h, d in zip(out["hidden"], out["layers"]):
        entry = {"hidden": tensor(h), "grad_hidden": tensor(h.grad),
                 "attn_in": tensor(d["attn_in"]), "attn_out": tensor(d["attn_out"])}
        if layer == "bet":
            for key in ("alpha", "beta", "posterior_mean", "posterior_variance", "n_t", "stats",
                        "w", "order_dispersion", "reasoning_entropy", "optimal_length",
                        "artifact_scores", "artifact_magnitude", "correction_magnitude"):
                if key in d:
                    entry[key] = None if d[key] is None else tensor(d[key])
        layers.append(entry)
    grads = {}
    for pname, p in model.named_parameters():
        grads[pname] = tensor(p.grad if p.grad is not None else torch.zeros_like(p))
    doc = {
        "schema": SCHEMA,
        "case": name,
        "dtype": "float64",
        "config": {"layer": layer, "n_layers": n_layers, "d_model": d_model, "n_heads": H,
                   "vocab_size": VOCAB, "task": task,
                   "attention": "causal" if task == "lm" else "bidirectional",
                   "n_classes": N_CLASSES if task == "classify" else None, "pe": pe,
                   "k_permutations": K, "max_len": MAX_LEN, "n_stats": R.n_stats_for(d_model),
                   "n_harmonics": 8, "tie_embeddings": tied, "dropout": 0.0,
                   "mdl_beta": MDL_BETA, "temperature": TEMPERATURE, "cot_eps": 1e-6,
                   "max_cot_length": 512},
        "inputs": {"ids": tensor(ids), "mask": tensor(mask), "lengths": list(LENGTHS),
                   "perm_pos": tensor(perm_pos), "targets": tensor(targets)},
        "params": {k: tensor(v) for k, v in model.state_dict().items()},
        "outputs": {"embedded": tensor(out["embedded"]), "grad_embedded": tensor(out["embedded"].grad),
                    "logits": tensor(out["logits"]), "layers": layers},
        "loss": {k: (bool(v) if k == "mdl_active" else int(v) if k == "n_targets" else number(v))
                 for k, v in res.items()},
        "grads": grads,
    }
    doc["loss"]["mdl_margin"] = number(margin)
    return name, doc


def main():
    torch.set_default_dtype(torch.float64)
    os.makedirs(OUT_DIR, exist_ok=True)
    for i, case in enumerate(CASES):
        name, doc = build_case(*case, seed=1000 + 17 * i)
        path = os.path.join(OUT_DIR, name + ".json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        lo = doc["loss"]
        print(f"{name}: {os.path.getsize(path) / 1024:.0f} KB, loss {lo['loss']:.6f}, "
              f"mdl_active {lo['mdl_active']} (margin {lo['mdl_margin']:+.3f})")


if __name__ == "__main__":
    main()
