#!/usr/bin/python3
"""Reference values for tests/test_eval_metrics.cpp (runtime/eval: metrics and calibration).

Writes tests/reference/eval_metrics.json. scikit-learn is not available, so every metric is
computed here directly in numpy, by a different route than the C++ where one exists:
  - ECE bins by np.searchsorted over the edges k/15 (C++: ceil(c * 15) - 1, then settled);
  - AUROC by counting all (error, correct) pairs (C++: Mann-Whitney average ranks);
  - F1 from a full confusion matrix, sklearn's conventions (macro over the classes present
    in labels or predictions; 0 when a class has no true and no predicted positives);
  - the calibration temperature by Newton's method in float64 torch autograd on ln T,
    checked against a dense grid (C++: Brent's method plus hand-derived Newton steps).
Run: /usr/bin/python3 tests/reference/gen_eval_metrics.py
"""
import json
import math
import os

import numpy as np
import torch

BINS = 15
rng = np.random.default_rng(20240612)


def normalise(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / rows.sum(axis=1, keepdims=True)


def bin_of(conf):
    edges = np.arange(BINS + 1) / BINS
    # side='left': the first edge >= c, so c in (e_i, e_{i+1}] lands in bin i, 0 in bin 0.
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, BINS - 1)


def reliability(conf, correct):
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    b = bin_of(conf)
    counts, confs, accs = [], [], []
    ece, mce = 0.0, 0.0
    for i in range(BINS):
        m = b == i
        n = int(m.sum())
        counts.append(n)
        if n == 0:
            confs.append(None)
            accs.append(None)
            continue
        c, a = float(conf[m].mean()), float(correct[m].mean())
        confs.append(c)
        accs.append(a)
        ece += abs(a - c) * n / len(conf)
        mce = max(mce, abs(a - c))
    return {"counts": counts, "confidence": confs, "accuracy": accs, "ece": ece, "mce": mce}


def auroc_pairs(score, positive):
    score = np.asarray(score, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    sp, sn = score[positive], score[~positive]
    if len(sp) == 0 or len(sn) == 0:
        return None
    gt = (sp[:, None] > sn[None, :]).sum()
    eq = (sp[:, None] == sn[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(sp) * len(sn)))


def f1_scores(pred, labels, C):
    cm = np.zeros((C, C), dtype=np.int64)  # [true, predicted]
    for t, p in zip(labels, pred):
        cm[t, p] += 1
    per = []
    for c in range(C):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        denom = 2 * tp + fp + fn
        per.append((float(2 * tp / denom) if denom else 0.0, denom > 0))
    macro = float(np.mean([f for f, present in per if present]))
    return macro, [f for f, _ in per]


def prediction_case(name, probs, labels):
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    N, C = probs.shape
    pred = probs.argmax(axis=1)  # first maximum on ties, as the C++
    conf = probs[np.arange(N), pred]
    correct = pred == labels
    onehot = np.eye(C)[labels]
    macro, per_class = f1_scores(pred, labels, C)
    case = {
        "name": name,
        "probs": probs.tolist(),
        "labels": labels.tolist(),
        "accuracy": float(correct.mean()),
        "f1_macro": macro,
        "nll": float(-np.log(np.maximum(probs[np.arange(N), labels], 1e-12)).mean()),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "mean_confidence": float(conf.mean()),
        "error_auroc": auroc_pairs(1.0 - conf, ~correct),
        "reliability": reliability(conf, correct),
    }
    if C == 2:
        case["f1_binary"] = per_class  # index = positive label
    return case


cases = []

# Dirichlet rows, labels drawn from the rows themselves (roughly calibrated), with a block
# of repeated rows so confidences tie across correct and wrong examples.
p = rng.dirichlet([0.6, 0.6, 0.6], size=200)
p = np.concatenate([p, np.repeat(p[:8], 5, axis=0)])
y = np.array([rng.choice(3, p=row) for row in p])
cases.append(prediction_case("dirichlet3_ties", normalise(p), y))

# Rows drawn from 6 prototypes: heavy ties in confidence, most bins empty.
protos = normalise(rng.dirichlet([1.0] * 4, size=6) ** 2)
idx = rng.integers(0, 6, size=160)
cases.append(prediction_case("quantized4", protos[idx], rng.integers(0, 4, size=160)))

# Binary, overconfident: F1 binary for either positive label and macro.
logit = rng.normal(0, 3, size=180)
p1 = 1 / (1 + np.exp(-logit))
y = (rng.random(180) < 1 / (1 + np.exp(-logit / 2.5))).astype(np.int64)
cases.append(prediction_case("binary", np.stack([1 - p1, p1], axis=1), y))

# Five classes: class 4 is neither a label nor a prediction, class 3 only a prediction,
# plus very small p[label] so the 1e-12 floor of the NLL matters.
p = rng.dirichlet([0.5] * 5, size=120)
p[:, 4] = 0.0
p = normalise(p)
y = p[:, :4].argmax(axis=1)
flip = rng.random(120) < 0.35
y[flip] = rng.integers(0, 3, size=flip.sum())
y[y == 3] = 2
p[:5] = [[1.0, 0.0, 0.0, 0.0, 0.0]] * 5
y[:5] = 1
cases.append(prediction_case("macro_absent_classes", p, y))

# Confidences exactly on bin edges (k/15 as a double): each belongs to the lower bin. The
# uniform 3-class row has confidence 1/3 == 5/15 and an argmax tie (first index wins).
rows, ys = [], []
for k in range(8, 16):
    for flip_label in (0, 1):
        rows.append([k / 15, 1 - k / 15])
        ys.append(flip_label)
edge2 = prediction_case("edges_binary", np.array(rows), ys)
cases.append(edge2)
cases.append(prediction_case("uniform3", np.full((4, 3), 1 / 3), [0, 1, 2, 0]))

# Confidence-level reliability: 0, every edge, and the next double above each edge.
conf = [0.0]
for k in range(1, 16):
    conf.append(k / 15)
    if k < 15:
        conf.append(float(np.nextafter(k / 15, 2.0)))
correct = [bool(rng.random() < 0.6) for _ in conf]
conf_case = {"confidence": conf, "correct": correct, "bins": bin_of(np.array(conf)).tolist(),
             "reliability": reliability(conf, correct)}

# AUROC with heavy ties (scores rounded to one decimal).
s = np.round(rng.random(300), 1)
pos = rng.random(300) < 0.3 + 0.4 * s
auroc_case = {"score": s.tolist(), "positive": pos.tolist(), "auroc": auroc_pairs(s, pos)}


# Temperature fit on logits whose labels come from softmax(z / 1.7).
def nll_t(z, y, u):
    return torch.nn.functional.cross_entropy(z / torch.exp(u), y)


N, C, T_TRUE = 400, 3, 1.7
z = rng.normal(0, 2.5, size=(N, C))
pz = np.exp(z / T_TRUE - (z / T_TRUE).max(axis=1, keepdims=True))
pz /= pz.sum(axis=1, keepdims=True)
y = np.array([rng.choice(C, p=row) for row in pz])
zt, yt = torch.tensor(z, dtype=torch.float64), torch.tensor(y)
u = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
for _ in range(100):
    loss = nll_t(zt, yt, u)
    (g,) = torch.autograd.grad(loss, u, create_graph=True)
    (h,) = torch.autograd.grad(g, u)
    with torch.no_grad():
        u -= g / h
    if abs(float(g)) < 1e-15:
        break
t_fit = math.exp(float(u))
grid = np.linspace(math.log(0.05), math.log(20), 20001)
with torch.no_grad():
    losses = [float(nll_t(zt, yt, torch.tensor(v, dtype=torch.float64))) for v in grid]
assert abs(math.exp(grid[int(np.argmin(losses))]) / t_fit - 1) < 1e-3, "Newton disagrees with the grid"
with torch.no_grad():
    calib_case = {
        "logits": z.tolist(),
        "labels": y.tolist(),
        "temperature": t_fit,
        "nll_before": float(nll_t(zt, yt, torch.tensor(0.0, dtype=torch.float64))),
        "nll_after": float(nll_t(zt, yt, torch.tensor(math.log(t_fit), dtype=torch.float64))),
        "probs_at_2": torch.softmax(zt[:10] / 2.0, dim=1).tolist(),
    }

out = {
    "generator": "tests/reference/gen_eval_metrics.py",
    "bins": BINS,
    "prediction_cases": cases,
    "confidence_case": conf_case,
    "auroc_case": auroc_case,
    "calibration_case": calib_case,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval_metrics.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(f"wrote {path} ({os.path.getsize(path)} bytes)")
