"""PyTorch inference baseline for `npm run bench -- encode` (bench/encode.ts runs it once per case).

    python3 bench/encode_torch.py MODEL_DIR IDS_JSON [BATCH]

MODEL_DIR: a model directory as m3's `saveModel` writes it (config.json, model.safetensors). The weights are
read by the small safetensors reader below (a JSON header and raw little-endian arrays): model files are
data, so nothing in them is unpickled or executed. IDS_JSON: a file holding a JSON list of token-id lists
(CLS ... SEP, unpadded), the ids the m3 rows encode.

What it times is what `m3 encode` / `m3 eval` / `m3 mine` do per batch, written with the reference
(../shared/reference/m3ref.py, found through $M3_SHARED_DIR, default ../../shared): sequences sorted by
length, longest first (as m3's encodeIds), in batches of BATCH (default 32) right-padded to the batch's
longest, `dense_vecs(encoder(...))` under torch.inference_mode(). For torch.set_num_threads(1) and then
(2): one warm-up batch, then the median of PASSES (3) timed passes over every batch. OpenBLAS (Debian's
torch does its matmuls there) keeps its own thread count, every core, as in bench_torch.py and m3's torch backend.

Prints one JSON line: {"backend": "pytorch", "threads_best", "sentences_per_s", "tokens_per_s",
"per_threads": {"1": {"secs", "sentences_per_s", "tokens_per_s"}, "2": {...}}, "torch", "first_dense"}.
Tokens are real (non-pad) tokens; the top-level rates are the better thread count's. first_dense is the
dense vector of the first input sequence, so the caller can check that the same weights ran on the same ids.
"""
import json, math, os, statistics, struct, sys, time
import torch

SHARED = os.environ.get("M3_SHARED_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
sys.path.insert(0, os.path.join(SHARED, "reference"))
import m3ref as R
from weights import hf_config

PASSES = 3  # timed passes per thread count, the median reported (bench/encode.ts does the same)

# safetensors dtype -> (torch dtype, bytes per element); m3 writes F32, HF checkpoints may hold halves
DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


def read_safetensors(path):
    """name -> float32 tensor, checking every offset against the file (a malformed file is an error, not a crash)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch.frombuffer shares it without a warning
    if len(data) < 8:
        sys.exit(f"{path}: not a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        sys.exit(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = len(data) - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") not in DTYPES:
            sys.exit(f"{path}: {name}: dtype {info.get('dtype')} is not supported ({', '.join(DTYPES)})")
        dtype, size = DTYPES[info["dtype"]]
        shape = [int(s) for s in info["shape"]]
        start, end = (int(o) for o in info["data_offsets"])
        count = math.prod(shape)
        if not 0 <= start <= end <= body or end - start != count * size:
            sys.exit(f"{path}: {name}: data_offsets {info['data_offsets']} do not fit shape {shape} ({info['dtype']})")
        t = torch.frombuffer(data, dtype=dtype, count=count, offset=8 + n + start) if count else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(shape).float()
    return out


def load_model(model_dir):
    """(cfg, state dict, prefix) in the form m3ref.encoder reads: weights.hf_config's keys, config.json's values."""
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    if raw.get("hidden_act", "gelu") != "gelu":
        sys.exit(f"{model_dir}: hidden_act {raw['hidden_act']!r}: the reference encoder has exact-erf GELU only")
    # m3's families: BERT, and XLM-R-style position ids (after the pad id) for xlm-roberta / roberta / camembert
    kind = "bert" if raw["model_type"] == "bert" else "xlm-roberta"
    cfg = hf_config(kind, raw["vocab_size"], raw["hidden_size"], raw["num_hidden_layers"], raw["num_attention_heads"],
                    raw["intermediate_size"], raw["max_position_embeddings"])
    cfg.update({k: raw[k] for k in ("layer_norm_eps", "pad_token_id") if k in raw})
    sd = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    # m3 saves unprefixed names; HF checkpoints may prefix them (bert., roberta.)
    word = [k for k in sd if k.endswith("embeddings.word_embeddings.weight")]
    if not word:
        sys.exit(f"{model_dir}: model.safetensors has no embeddings.word_embeddings.weight")
    return cfg, sd, word[0][:-len("embeddings.word_embeddings.weight")]


def padded(seqs, pad):
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad, dtype=torch.int64)
    mask = torch.zeros((len(seqs), length), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[i, :len(s)] = 1
    return ids, mask


def main(model_dir, ids_file, batch):
    cfg, sd, prefix = load_model(model_dir)
    with open(ids_file) as f:
        seqs = json.load(f)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # stable, as encodeIds' sort
    # padding is done before the clock starts (m3 pads inside it): if anything, this favours PyTorch
    batches = [padded([seqs[i] for i in order[s:s + batch]], cfg["pad_token_id"]) for s in range(0, len(order), batch)]
    tokens = sum(len(s) for s in seqs)

    def encode(ids, mask):
        return R.dense_vecs(R.encoder(cfg, sd, ids, mask, prefix=prefix))

    per_threads, dense = {}, None
    with torch.inference_mode():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            encode(*batches[0])  # warm-up
            passes = []
            for _ in range(PASSES):
                t0 = time.perf_counter()
                outs = [encode(ids, mask) for ids, mask in batches]
                passes.append(time.perf_counter() - t0)
            secs = statistics.median(passes)
            per_threads[str(threads)] = {"secs": secs, "sentences_per_s": len(seqs) / secs, "tokens_per_s": tokens / secs}
            dense = torch.cat(outs)[order.index(0)]
    best = max(per_threads, key=lambda t: per_threads[t]["tokens_per_s"])
    print(json.dumps({"backend": "pytorch", "threads_best": int(best), "sentences_per_s": per_threads[best]["sentences_per_s"],
                      "tokens_per_s": per_threads[best]["tokens_per_s"], "per_threads": per_threads, "torch": torch.__version__,
                      "first_dense": [float(v) for v in dense]}))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n\n")[1].strip())
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 32)
