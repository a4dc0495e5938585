"""PyTorch baseline for the dense-only points of `npm run bench -- train` (bench/train.ts runs it): the median
time of one dense InfoNCE training step (forward, backward, AdamW), as the pairs stage trains.

    python3 bench/train_torch.py CONFIG_JSON [STEPS]          (a python3 with torch: Debian's python3-torch)

CONFIG_JSON: {"vocab", "hidden", "layers", "heads", "ff", "batch", "group", "qlen", "plen", "family", "temperature"},
family "bert" or "xlm-roberta" (the reference's config and id framing for it). Prints one JSON line with the
keys of ../shared/reference/bench_torch.py's: {"backend": "pytorch", "step_s_median", "tokens_per_s",
"threads", "torch", "device", "amp", "sdpa", "sparse", "loss"}.

Why not bench_torch.py: its loss is fixed to the unified one with self-distillation, so it cannot time a
dense-only step. Everything else is its step: the reference (m3ref.py, found through $M3_SHARED_DIR,
default ../../shared) encodes queries and passages, `m3_loss` with unified off (dense InfoNCE over the
in-batch passages), AdamW lr 1e-5 weight decay 0.01; one intra-op thread (OpenBLAS still uses every core
inside matmuls; TORCH_THREADS overrides it); one warm-up step, then the median of STEPS (default 6).
Only the encoder is trained, as in the pairs stage, whose models have no M3 heads. CPU only.
"""
import json, os, statistics, sys, time
import torch

SHARED = os.environ.get("M3_SHARED_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
sys.path.insert(0, os.path.join(SHARED, "reference"))
import m3ref as R
from weights import hf_config, init_encoder, rand_ids

if os.environ.get("TORCH_DEVICE", "cpu") != "cpu":
    # bench_torch.py's GPU options (fused attention, bf16 autocast) are not repeated here: no silent CPU row
    sys.exit("train_torch.py: CPU only (TORCH_DEVICE=%s)" % os.environ["TORCH_DEVICE"])
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))

c = json.loads(sys.argv[1])
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 6

g = torch.Generator().manual_seed(0)
cfg = hf_config(c["family"], c["vocab"], c["hidden"], c["layers"], c["heads"], c["ff"], max(c["qlen"], c["plen"]) + 4)
sd = init_encoder(cfg, g)
b, gs = c["batch"], c["group"]
q_ids, q_mask = rand_ids(g, b, c["qlen"], c["vocab"], cfg, min_len=c["qlen"])
p_ids, p_mask = rand_ids(g, b * gs, c["plen"], c["vocab"], cfg, min_len=c["plen"])
params = {k: t.clone().requires_grad_(True) for k, t in sd.items() if not k.startswith("pooler.")}
opt = torch.optim.AdamW(list(params.values()), lr=1e-5, weight_decay=0.01)
lp = {"temperature": c["temperature"], "group_size": gs, "unified": False}

times = []
for i in range(steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad()
    qh = R.encoder(cfg, params, q_ids, q_mask)
    ph = R.encoder(cfg, params, p_ids, p_mask)
    out = R.m3_loss(qh, ph, q_ids, p_ids, q_mask, p_mask, params, lp)
    out["loss"].backward()
    opt.step()
    if i:
        times.append(time.perf_counter() - t0)
tok = b * c["qlen"] + b * gs * c["plen"]
med = statistics.median(times)
print(json.dumps({"backend": "pytorch", "step_s_median": med, "tokens_per_s": tok / med,
                  "threads": torch.get_num_threads(), "torch": torch.__version__, "device": "cpu",
                  "amp": "fp32", "sdpa": False, "sparse": "none", "loss": float(out["loss"])}))
