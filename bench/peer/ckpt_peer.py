#!/usr/bin/python3
"""PyTorch peer of `betctl bench ckpt`: torch.save / torch.load of the same tensors.

Each input is a .safetensors file the bench exported from the checkpoint it timed (same
names, dtypes, shapes and bytes). Tensors named "optim.*" are the optimizer state; the
peer saves {"model": {...}} or {"model": {...}, "optimizer": {...}} with torch.save, as a
PyTorch training script would, with the same durability as the bench's .bet writer
(temporary file, fsync, rename, fsync of the directory), and loads it with torch.load.
Every load is compared with the input bit for bit. Prints one JSON object on stdout.

Reads safetensors itself (Debian has no python3-safetensors).
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time
from collections import OrderedDict

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64,
          "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    buf = memoryview(data)[8 + n:]
    out = OrderedDict()
    # Buffer order is the bench's tensor order (the JSON header's key order is not).
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        shape = info["shape"]
        if end > begin:
            t = torch.frombuffer(bytearray(buf[begin:end]), dtype=dtype).reshape(shape)
        else:
            t = torch.empty(shape, dtype=dtype)
        out[name] = t
    return out, meta, len(data)


def as_state(tensors):
    model = OrderedDict((k, v) for k, v in tensors.items() if not k.startswith("optim."))
    optim = OrderedDict((k[len("optim."):], v) for k, v in tensors.items() if k.startswith("optim."))
    return {"model": model, "optimizer": optim} if optim else {"model": model}


def bytes_of(t):
    return t.reshape(-1).contiguous().view(torch.uint8)


def mismatch(state, tensors):
    """'' when `state` (as loaded) holds `tensors` exactly, else what differs first."""
    got = OrderedDict(state["model"])
    for k, v in state.get("optimizer", {}).items():
        got["optim." + k] = v
    if list(got.keys()) != list(tensors.keys()):
        return "tensor names differ"
    for k, want in tensors.items():
        t = got[k]
        if t.dtype != want.dtype or tuple(t.shape) != tuple(want.shape):
            return "'%s': dtype/shape differ" % k
        if t.numel() and not torch.equal(bytes_of(t), bytes_of(want)):
            return "'%s': bytes differ" % k
    return ""


def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def durable_save(obj, path):
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def run_one(path, out_dir, reps, cold):
    tensors, meta, _ = read_safetensors(path)
    state = as_state(tensors)
    target = os.path.join(out_dir, os.path.basename(path).rsplit(".", 1)[0] + ".pt")
    save_s, load_s = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        durable_save(state, target)
        save_s.append(time.perf_counter() - t0)
    loaded = None
    for _ in range(reps):
        if cold:
            drop_cache(target)
        t0 = time.perf_counter()
        loaded = torch.load(target, map_location="cpu")
        load_s.append(time.perf_counter() - t0)
    err = mismatch(loaded, tensors)
    size = os.path.getsize(target)
    os.remove(target)
    return {
        "input": path,
        "kind": meta.get("kind", "training" if "optimizer" in state else "production"),
        "tensors": len(tensors),
        "raw_bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
        "file_bytes": size,
        "save_ms": statistics.median(save_s) * 1e3,
        "load_ms": statistics.median(load_s) * 1e3,
        "save_ms_min": min(save_s) * 1e3,
        "load_ms_min": min(load_s) * 1e3,
        "verified": err == "",
        "error": err,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help=".safetensors files exported by betctl bench ckpt")
    ap.add_argument("--reps", type=int, default=5, help="timed saves and loads of each input (median reported)")
    ap.add_argument("--dir", default=None, help="where the .pt files go (default: beside each input)")
    ap.add_argument("--drop-cache", action="store_true", help="evict the file from the page cache before each load")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    a = ap.parse_args()
    if a.reps < 1:
        ap.error("--reps must be >= 1")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    results = []
    for p in a.inputs:
        try:
            results.append(run_one(p, a.dir or os.path.dirname(os.path.abspath(p)), a.reps, a.drop_cache))
        except Exception as e:  # reported per input; the bench prints it in that row
            results.append({"input": p, "error": "%s: %s" % (type(e).__name__, e), "verified": False})
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "reps": a.reps, "drop_cache": a.drop_cache, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
