#!/usr/bin/python3
"""PyTorch peer of `betctl bench infer`: the predict path of `betctl serve` (tokenize, one
padded forward of the model of docs/model.md as tests/reference/bet_reference.py defines it,
softmax with the stored temperature, the uncertainty fields, the JSON text) on weights that
betctl exported as safetensors. Prints one JSON object.

  bench/peer/infer_peer.py JOB.json

JOB.json (written by `betctl bench infer --peer`):
  {"weights": "model.safetensors", "threads": N, "warmup": 3, "quantize": "none"|"int8",
   "relabellings": {"32": [[[...n ids...] x k] x L], ...},
   "cases": [{"kind": "single"|"batch", "tokens": n, "texts": [...], "reps": R, "seconds": S,
              "warmup": W}]}   (a case's warmup overrides the job's)

"relabellings" are the attention paths' position ids betctl uses at inference for a text of
n tokens (a pure function of the model's inference seed, layer, path and n); the peer
takes them as given, as betctl takes them from its memo cache, so both compute the same
numbers. The module also serves bench/peer/serve_peer.py (load_peer, PeerPredictor).

With "quantize": "int8" every case is also timed on
torch.ao.quantization.quantize_dynamic(model, {every nn.Linear but the head: qint8}) (the
layers `betctl export --quantize int8` quantises), interleaved with the f32 model, and
reported as "times_ms_int8".
"""
import base64
import json
import math
import os
import statistics
import struct
import sys
import copy
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import bet_reference as R  # noqa: E402

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64,
           "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    """(name -> tensor, metadata dict) of a safetensors file (u64 LE header length, JSON
    header, raw little-endian row-major data)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = bytearray(blob[8 + n:])
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        dt = _DTYPES[h["dtype"]]
        t = torch.frombuffer(data, dtype=dt, count=(e - b) // torch.tensor([], dtype=dt).element_size(),
                             offset=b) if e > b else torch.empty(0, dtype=dt)
        tensors[name] = t.reshape(h["shape"]).clone()
    return tensors, meta


class ByteTokenizer:
    def encode(self, text):
        return [b + 3 for b in text.encode("utf-8")]


class SpmTokenizer:
    def __init__(self, model_b64):
        import sentencepiece as spm  # only for spm checkpoints
        self.sp = spm.SentencePieceProcessor(model_proto=base64.b64decode(model_b64))

    def encode(self, text):
        return [i + 3 for i in self.sp.encode(text)]


def load_peer(weights_path):
    """The model of a betctl safetensors export (config and tokenizer from its metadata),
    in eval mode, and its tokenizer."""
    tensors, meta = read_safetensors(weights_path)
    cfg = json.loads(meta["config"])
    tok = json.loads(meta.get("tokenizer", '{"kind": "byte"}'))
    model = R.BETModel(cfg["vocab_size"], cfg["d_model"], cfg["heads"], cfg["layers"], cfg["task"],
                       cfg["num_classes"], cfg["layer"], cfg["pe"], cfg["k_permutations"], cfg["max_len"],
                       cfg["dropout"], cfg["n_harmonics"], cfg.get("tie_embeddings", False))
    state = {k: v.to(torch.get_default_dtype()) if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    tokenizer = ByteTokenizer() if tok.get("kind") == "byte" else SpmTokenizer(tok["model"])
    return model, cfg, tokenizer


def _entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0.0)


class PeerPredictor:
    """What betctl's ModelPredictor does for the server's default request (K = 1: no
    orderings, no Monte Carlo dropout), for classify models."""

    def __init__(self, model, cfg, tokenizer, relabellings=None):
        assert cfg["task"] == "classify", "the peer serves classify models"
        self.model, self.cfg, self.tok = model, cfg, tokenizer
        C = cfg["num_classes"]
        labels = cfg.get("labels") or []
        self.labels = [labels[c] if c < len(labels) else str(c) for c in range(C)]
        self.max_len = cfg["max_len"]
        L, k = cfg["layers"], cfg["k_permutations"]
        self.needs_perm = cfg["layer"] == "bet" and cfg["pe"] == "rope" and k > 0
        self.L, self.k = L, k
        # n -> [L, k, n] position ids of the attention paths
        self.perm = {int(n): torch.tensor(v, dtype=torch.long) for n, v in (relabellings or {}).items()}
        self.gen = torch.Generator().manual_seed(0)

    def _perm_for(self, n):
        if n not in self.perm:  # not given by betctl: drawn here (timing is alike, values differ)
            mask = torch.ones(1, n, dtype=torch.long)
            self.perm[n] = R.draw_perm_pos(self.L, self.k, mask, False, self.max_len, self.gen)[:, :, 0]
        return self.perm[n]

    def predict_batch(self, texts):
        """One padded forward for all texts; a response dict per text (as betctl's)."""
        rows, truncated = [], []
        for t in texts:
            ids = self.tok.encode(t)
            if not ids:
                raise ValueError("text: has no tokens")
            truncated.append(len(ids) > self.max_len)
            rows.append(ids[: self.max_len])
        B, S = len(rows), max(len(r) for r in rows)
        ids = torch.zeros(B, S, dtype=torch.long)
        mask = torch.zeros(B, S, dtype=torch.long)
        lengths = [len(r) for r in rows]
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[b, : len(r)] = 1
        perm_pos = None
        if self.needs_perm:
            # Padding keeps ids n..S-1, as betctl's relabellings do.
            perm_pos = torch.arange(S).expand(self.L, self.k, B, S).clone()
            for b, n in enumerate(lengths):
                perm_pos[:, :, b, :n] = self._perm_for(n)
        with torch.inference_mode():
            out = self.model(ids, mask, perm_pos)
            logits = out["logits"].double()  # already divided by the stored temperature
            probs = torch.softmax(logits, dim=-1).tolist()
            last = torch.tensor(lengths) - 1
            ar = torch.arange(B)
            d = out["layers"][-1]
            disp = torch.stack([l["order_dispersion"] for l in out["layers"]]).mean(0).tolist()
            beta = None
            if "alpha" in d:
                beta = [d[f][ar, last].tolist() for f in ("alpha", "beta", "posterior_mean", "posterior_variance")]
            cot = d["optimal_length"][ar, last].tolist() if "optimal_length" in d else None
        res = []
        for b in range(B):
            p = probs[b]
            c = max(range(len(p)), key=lambda i: p[i])
            h = _entropy(p)
            unc = {"total": h, "aleatoric": h, "epistemic": 0.0, "order_dispersion": None, "members": 1}
            if beta is not None:
                a, bb, mu, var = (beta[0][b], beta[1][b], beta[2][b], beta[3][b])
                unc["beta"] = {"alpha": a, "beta": bb, "posterior_mean": mu, "posterior_variance": var,
                               "epistemic": var, "aleatoric": mu * (1.0 - mu)}
            res.append({"label": self.labels[c],
                        "probabilities": {self.labels[i]: p[i] for i in range(len(p))},
                        "confidence": p[c], "uncertainty": unc, "attention_dispersion": disp[b],
                        "cot_length": cot[b] if cot is not None else None, "truncated": truncated[b]})
        return res


def _time_case(pred, case, warmup):
    texts = case["texts"]
    single = case["kind"] == "single"

    def once():
        if single:
            return [json.dumps(pred.predict_batch(texts[:1])[0])]
        return [json.dumps(r) for r in pred.predict_batch(texts)]

    for _ in range(warmup):
        once()
    times = []
    t_end = time.perf_counter() + case["seconds"]
    while len(times) < case["reps"] and (len(times) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return times


def quantize_dynamic_peer(model, cfg):
    """torch's dynamic int8 quantization of the same layers betctl quantises: every
    nn.Linear but a classifier's head (qint8 weights per tensor, activations quantised
    per call)."""
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError:  # older torch
        from torch.quantization import default_dynamic_qconfig, quantize_dynamic
    spec = {name: default_dynamic_qconfig for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not (cfg["task"] == "classify" and name == "head")}
    return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)


def _time_pair(pred, pred8, case, warmup):
    """f32 and int8 calls alternating (twice the case's seconds), as betctl times its pair."""
    texts = case["texts"]
    single = case["kind"] == "single"

    def once(p):
        if single:
            return [json.dumps(p.predict_batch(texts[:1])[0])]
        return [json.dumps(r) for r in p.predict_batch(texts)]

    for _ in range(warmup):
        once(pred)
        once(pred8)
    times, times8 = [], []
    t_end = time.perf_counter() + 2 * case["seconds"]
    i = 0
    while len(times) < case["reps"] and (len(times) < 3 or time.perf_counter() < t_end):
        order = [(pred8, times8), (pred, times)] if i % 2 else [(pred, times), (pred8, times8)]
        for p, out in order:
            t0 = time.perf_counter()
            once(p)
            out.append(time.perf_counter() - t0)
        i += 1
    return times, times8


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    with open(sys.argv[1]) as f:
        job = json.load(f)
    if job.get("threads", 0) > 0:
        torch.set_num_threads(job["threads"])
    model, cfg, tok = load_peer(job["weights"])
    pred = PeerPredictor(model, cfg, tok, job.get("relabellings"))
    pred8 = None
    if job.get("quantize", "none") == "int8":
        pred8 = PeerPredictor(quantize_dynamic_peer(model, cfg), cfg, tok, job.get("relabellings"))
    result = {"peer": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cases": []}
    if pred8 is not None:
        result["quantized_engine"] = torch.backends.quantized.engine
    for case in job["cases"]:
        warm = case.get("warmup", job.get("warmup", 3))
        if pred8 is None:
            times = _time_case(pred, case, warm)
        else:  # calls alternate, so load changes weigh on both alike
            times, times8 = _time_pair(pred, pred8, case, warm)
        texts = case["texts"] if case["kind"] == "batch" else case["texts"][:1]
        answers = pred.predict_batch(texts)
        ms = sorted(t * 1e3 for t in times)
        result["cases"].append({
            "kind": case["kind"], "tokens": case["tokens"], "batch": len(texts), "times_ms": ms,
            "median_ms": statistics.median(ms),
            "probabilities": [[a["probabilities"][l] for l in pred.labels] for a in answers],
            "posterior_mean": [a["uncertainty"].get("beta", {}).get("posterior_mean") for a in answers],
            "attention_dispersion": [a["attention_dispersion"] for a in answers],
            "cot_length": [a["cot_length"] for a in answers]})
        if pred8 is not None:
            result["cases"][-1]["times_ms_int8"] = sorted(t * 1e3 for t in times8)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
