#!/usr/bin/python3
"""FastAPI + uvicorn peer of `betctl bench serve`: serves the model of a betctl safetensors
export with PyTorch eager (bench/peer/infer_peer.py's PeerPredictor, i.e.
tests/reference/bet_reference.py), with the response shapes of `betctl serve`:

  GET  /health       {"status": "ok"}
  POST /v1/predict   {"text": ...} -> {"label", "probabilities", "confidence", "uncertainty",
                     "attention_dispersion", "cot_length", "truncated", "latency_ms"}

  bench/peer/serve_peer.py --weights model.safetensors [--relabellings R.json]
      [--threads N] [--host 127.0.0.1] [--port 0]

Binds (port 0: an ephemeral one) and listens, then prints {"port": P} on a line of stdout
and serves until SIGTERM or SIGINT. Without fastapi/uvicorn it prints {"error": ...} and
exits 1. Needs Debian's python3-fastapi and python3-uvicorn (python3-uvloop and
python3-httptools are used when installed, as `uvicorn[standard]` would).

The predict handler is a plain `def` (FastAPI runs it in its thread pool, the documented
way for blocking work), one forward per request: FastAPI has no batching of its own.
"""
import argparse
import json
import os
import socket
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import infer_peer as P  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="betctl safetensors export")
    p.add_argument("--relabellings", help="JSON {n: [L][k][n]} of the attention paths' position ids")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    try:
        import uvicorn
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse
        from pydantic import BaseModel
    except ImportError as e:
        print(json.dumps({"error": f"{e} (install python3-fastapi and python3-uvicorn)"}), flush=True)
        sys.exit(1)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    relabellings = None
    if a.relabellings:
        with open(a.relabellings) as f:
            relabellings = json.load(f)
    model, cfg, tok = P.load_peer(a.weights)
    pred = P.PeerPredictor(model, cfg, tok, relabellings)

    class PredictBody(BaseModel):
        text: str = ""
        return_uncertainty: bool = True

    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/predict")
    def predict(body: PredictBody):
        t0 = time.perf_counter()
        if not body.text:
            return JSONResponse(status_code=422,
                                content={"error": {"code": "empty_text", "message": "text: is empty"}})
        r = pred.predict_batch([body.text])[0]
        if not body.return_uncertainty:
            r.pop("uncertainty", None)
            r.pop("attention_dispersion", None)
        r["latency_ms"] = (time.perf_counter() - t0) * 1e3
        return r

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((a.host, a.port))
    sock.listen(2048)  # connections made before uvicorn accepts wait in the backlog
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    print(json.dumps({"port": sock.getsockname()[1], "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "fastapi": sys.modules["fastapi"].__version__,
                      "uvicorn": uvicorn.__version__}), flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
