#!/usr/bin/python3
"""Reference values for tests/test_nn_ops.cpp, computed with PyTorch in float64.

Writes nn_ops.json next to this script. Each case stores its inputs (flattened,
row-major, with shapes) and the outputs torch gives. Masked log-softmax entries are
-inf, which JSON cannot hold: they are written as null.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
D = torch.float64


def flat(t):
    return [None if math.isinf(v) and v < 0 else v for v in t.detach().reshape(-1).tolist()]


def tensor(t):
    return {"shape": list(t.shape), "data": flat(t)}


cases = {}

# softmax / log_softmax along several dims, with and without a broadcast mask.
x = torch.randn(2, 3, 5, dtype=D) * 3
mask = (torch.rand(2, 1, 5) > 0.35).to(D)
mask[1, 0, :] = 0  # a fully masked row (batch 1): zeros expected, torch gives NaN
mask[0, 0, 2] = 1
soft = []
for dim in (-1, 0, 1):
    soft.append({"dim": dim, "softmax": tensor(torch.softmax(x, dim)),
                 "log_softmax": tensor(torch.log_softmax(x, dim))})
# masked, last dim (the row pattern is fixed per (b, s))
xm = x.masked_fill(mask == 0, float("-inf"))
sm = torch.softmax(xm, -1).nan_to_num(0.0)
lsm = torch.log_softmax(xm, -1)
lsm[1] = 0.0  # our convention for a fully masked row
masked_last = {"softmax": tensor(sm), "log_softmax": tensor(lsm)}
# masked along dim 1 with a mask broadcast over dim 0
mask1 = (torch.rand(1, 3, 5) > 0.3).to(D)
mask1[0, :, 0] = 1
xm1 = x.masked_fill(mask1 == 0, float("-inf"))
masked_dim1 = {"mask": tensor(mask1), "softmax": tensor(torch.softmax(xm1, 1)),
               "log_softmax": tensor(torch.log_softmax(xm1, 1))}
cases["softmax"] = {"x": tensor(x), "mask": tensor(mask), "dims": soft, "masked_last": masked_last,
                    "masked_dim1": masked_dim1}

# layer_norm over the last dim
xl = torch.randn(3, 4, 6, dtype=D) * 2 + 0.5
w = torch.randn(6, dtype=D)
b = torch.randn(6, dtype=D)
cases["layer_norm"] = {
    "x": tensor(xl), "weight": tensor(w), "bias": tensor(b), "eps": 1e-5,
    "affine": tensor(F.layer_norm(xl, (6,), w, b, 1e-5)),
    "plain": tensor(F.layer_norm(xl, (6,), None, None, 1e-5)),
    "eps_big": tensor(F.layer_norm(xl, (6,), w, b, 0.5)),
}

# cross-entropy (sum), with ignored targets
lg = torch.randn(7, 5, dtype=D) * 2
tg = torch.tensor([0, 4, -100, 2, 1, -100, 3])
cases["cross_entropy"] = {
    "logits": tensor(lg), "targets": tg.tolist(), "ignore_index": -100,
    "sum": F.cross_entropy(lg, tg, reduction="sum", ignore_index=-100).item(),
    "count": int((tg != -100).sum()),
}
tg7 = torch.tensor([0, 4, 7, 2, 1, 7, 3])  # a non-default ignore_index
lg7 = lg.clone()
cases["cross_entropy_ignore7"] = {
    "targets": tg7.tolist(), "ignore_index": 7,
    "sum": F.cross_entropy(lg7, tg7, reduction="sum", ignore_index=7).item(),
}


# rope, half-split convention: pair (i, i + hd/2) rotated by pos * base^(-2i/hd)
def rope_ref(x, pos, base):
    hd = x.shape[-1]
    half = hd // 2
    inv = base ** (-2.0 * torch.arange(half, dtype=D) / hd)
    ang = pos.to(D)[..., None] * inv  # [B, S, half] or [S, half]
    if ang.dim() == 2:
        ang = ang[None]
    ang = torch.cat([ang, ang], -1)[:, None]  # [B or 1, 1, S, hd]
    x1, x2 = x[..., :half], x[..., half:]
    rot = torch.cat([-x2, x1], -1)
    return x * ang.cos() + rot * ang.sin()


xr = torch.randn(2, 3, 4, 8, dtype=D)
pos_b = torch.tensor([[0, 1, 2, 3], [7, 2, 40, 1000]])
pos_s = torch.tensor([3, 0, 11, 5])
cases["rope"] = {
    "x": tensor(xr),
    "pos_batch": pos_b.tolist(), "out_batch": tensor(rope_ref(xr, pos_b, 10000.0)),
    "pos_seq": pos_s.tolist(), "out_seq_base100": tensor(rope_ref(xr, pos_s, 100.0)),
}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nn_ops.json")
with open(path, "w") as f:
    json.dump(cases, f, indent=None, separators=(",", ":"), allow_nan=False)
print(path, os.path.getsize(path), "bytes")
