#!/usr/bin/python3
"""Reference values for tests/test_matmul.cpp and tests/test_index_ops.cpp.

Writes matmul_index.json next to this script. Inputs are float32 values (stored
exactly as doubles); matmul/linear outputs are what torch computes from them in
float64, so the engine's f32 results can be held to a relative tolerance. A stored
operand with "t": true is used transposed (its last two dims swapped), so the engine
sees a non-contiguous view, as with W^T or K^T.
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20240607)


def tensor(t):
    return {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()}


def f32(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def operand(shape, transposed):
    """A stored f32 tensor and the operand the engine uses (its transpose when asked)."""
    if transposed:
        s = list(shape)
        s[-1], s[-2] = s[-2], s[-1]
        stored = f32(*s)
        return {"value": tensor(stored), "t": True}, stored.transpose(-1, -2)
    stored = f32(*shape)
    return {"value": tensor(stored), "t": False}, stored


cases = {}

mm = []
for a_shape, b_shape, ta, tb in [
    ((7, 5), (5, 3), False, False),
    ((17, 33), (33, 9), False, False),
    ((2, 3, 4), (2, 4, 5), False, False),
    ((1, 3, 4), (2, 4, 5), False, False),       # broadcast batch
    ((3, 4), (2, 4, 5), False, False),          # 2-D @ batched
    ((2, 2, 6, 4), (4, 3), False, False),       # batched @ 2-D
    ((2, 2, 6, 4), (1, 2, 4, 3), False, False),
    ((9, 6), (6, 8), True, False),              # A^T
    ((9, 6), (6, 8), False, True),              # B^T (W^T)
    ((9, 6), (6, 8), True, True),
    ((2, 3, 7, 8), (2, 3, 8, 5), False, True),  # q @ k^T
    ((4, 1, 5), (4, 5, 1), True, False),        # size-1 dims, transposed
]:
    a_rec, a = operand(a_shape, ta)
    b_rec, b = operand(b_shape, tb)
    out = torch.matmul(a.double(), b.double())
    mm.append({"a": a_rec, "b": b_rec, "out": tensor(out)})
cases["matmul"] = mm

lin = []
for x_shape, out_f, bias, tx in [
    ((5, 6), 4, True, False),
    ((5, 6), 4, False, False),
    ((2, 3, 6), 4, True, False),
    ((5, 6), 7, True, True),   # x is a transposed view
    ((6,), 3, True, False),    # 1-D input
]:
    if tx:
        x_rec, x = operand(x_shape, True)
    else:
        x = f32(*x_shape)
        x_rec = {"value": tensor(x), "t": False}
    w = f32(out_f, x_shape[-1])
    b = f32(out_f) if bias else None
    out = F.linear(x.double(), w.double(), None if b is None else b.double())
    rec = {"x": x_rec, "w": tensor(w), "out": tensor(out)}
    if b is not None:
        rec["b"] = tensor(b)
    lin.append(rec)
cases["linear"] = lin

# Indexing (exact): forward values, and embedding's weight gradient for a given
# upstream gradient (repeated ids accumulate).
D = torch.float64
w = torch.randn(10, 4, dtype=D)
ids = torch.tensor([[1, 3, 3], [9, 0, 3]])
we = w.clone().requires_grad_(True)
e = F.embedding(ids, we)
g = torch.randn(*e.shape, dtype=D)
e.backward(g)
cases["embedding"] = {"weight": tensor(w), "ids": tensor(ids), "out": tensor(e), "grad_out": tensor(g),
                      "grad_weight": tensor(we.grad)}

x = torch.randn(3, 5, dtype=D)
gathers = []
for dim, index in [(1, torch.tensor([[0, 4, 4, 1], [2, 2, 0, 3], [1, 0, 1, 0]])),
                   (0, torch.tensor([[2, 0, 1, 1, 0], [0, 0, 2, 1, 2]])),
                   (1, torch.tensor([[3], [0]]))]:  # index smaller than input off dim
    gathers.append({"dim": dim, "index": tensor(index), "out": tensor(torch.gather(x, dim, index))})
cases["gather"] = {"x": tensor(x), "cases": gathers}

y = torch.randn(2, 4, 3, dtype=D)
sel = []
for dim, index in [(0, torch.tensor([1, 1, 0])), (1, torch.tensor([3, 0, 3, 2, 1])), (2, torch.tensor([2]))]:
    sel.append({"dim": dim, "index": tensor(index), "out": tensor(torch.index_select(y, dim, index))})
cases["index_select"] = {"x": tensor(y), "cases": sel}

p, q, r = torch.randn(2, 3, dtype=D), torch.randn(2, 1, dtype=D), torch.randn(2, 4, dtype=D)
cases["concat"] = {"inputs": [tensor(p), tensor(q), tensor(r)], "dim": 1, "out": tensor(torch.cat([p, q, r], 1))}

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "matmul_index.json"), "w") as f:
    json.dump(cases, f, separators=(",", ":"))
