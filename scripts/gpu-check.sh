#!/usr/bin/env bash
# The GPU check of issue 13, as one command on the device machine:  BUNDLE/gpu-check.sh RESULTS_DIR
#
# Sections, in this order, each under its own `timeout` (and all under M3_GPU_CHECK_TOTAL seconds, default
# 560 on cuda: a section gets what is left when that is less than its budget, and is skipped below 10 s):
#   env          GPU (nvidia-smi), python3's torch / CUDA, g++, nvcc; the python with torch is used below
#   patch        CUDA fixes to the bundle's reference/bench_torch.py (listed in the results)
#   build        ./build-addon.sh against that torch, then `m3 info`
#   golden       every golden case on the torch backend on the device
#   bge_m3_gpu   the headline: bench point bge-m3-gpu, bf16, next to PyTorch (tokens/s and peak memory ratios)
#   bench_small_bf16, bench_small_fp32   bench-small next to PyTorch
#   long_bucket  1 query x group 2, 8192-token passages, sub-batch 1, bf16: does one step fit
#   profile      bge-m3-gpu's per-kernel host time (M3_TORCH_PROFILE=1), profile_sync its per-kernel GPU time
#                (M3_TORCH_PROFILE=sync), after the warm-up step; overhead: one op's host cost
#   nccl         a world-size-1 NCCL process group: all_reduce, all_gather, broadcast, barrier, averaging
#   conformance  the TF.js conformance specs on the torch backend on the device (--budget)
#   golden_wasm  the golden cases on wasm, for reference
# Results: RESULTS_DIR/results.json, RESULTS_DIR/summary.txt (both rewritten after every section), and the
# logs build.log, golden.log, bench.log, nccl.log, conformance.log.
#
# Where the project comes from: $BUNDLE, else this script's directory when it holds `m3` (a bundle), else
# the repository around scripts/ (node bin/m3.js etc.; its addon is not rebuilt unless M3_GPU_CHECK_BUILD=1).
# On CPU, for testing the machinery:  M3_GPU_CHECK_DEVICE=cpu scripts/gpu-check.sh .scratch/gc
# (small shapes, the same sections). M3_GPU_CHECK_SECTIONS=golden,nccl runs only those (env and patch always);
# M3_GPU_CHECK_BUDGET_BUILD=300 (any section's name in capitals) changes one budget.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RESULTS=${1:?usage: gpu-check.sh RESULTS_DIR}
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd)
DEV=${M3_GPU_CHECK_DEVICE:-cuda}
if [ "$DEV" = cuda ]; then TOTAL=${M3_GPU_CHECK_TOTAL:-560}; else TOTAL=${M3_GPU_CHECK_TOTAL:-1200}; fi
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/m3-gpu-check.XXXXXX")
: > "$WORK/sections.tsv"
for f in build golden bench nccl conformance; do : > "$RESULTS/$f.log"; done

if [ -n "${BUNDLE:-}" ]; then ROOT=$(cd "$BUNDLE" && pwd); MODE=bundle
elif [ -x "$HERE/m3" ]; then ROOT=$HERE; MODE=bundle
else ROOT=$(cd "$HERE/.." && pwd); MODE=repo; fi
cd "$ROOT" || exit 2

if [ $MODE = bundle ]; then
  M3=("$ROOT/m3"); BENCH=("$ROOT/bench"); GOLDEN=("$ROOT/golden"); CONF=("$ROOT/conformance")
  BUILD=("$ROOT/build-addon.sh"); REF="$ROOT/shared/reference"
else
  M3=(node "$ROOT/bin/m3.js"); BENCH=(node "$ROOT/bin/bench.js")
  GOLDEN=(node -r "$ROOT/bin/register.js" "$ROOT/scripts/golden-run.ts"); CONF=(node "$ROOT/test/backend/torch/conformance/run.js")
  if [ "${M3_GPU_CHECK_BUILD:-0}" = 1 ]; then BUILD=(env M3_TORCH_REBUILD=1 node "$ROOT/native/build.js"); else BUILD=(); fi
  # the patched reference goes to a copy: ../shared is not ours to change
  mkdir -p "$WORK/shared/reference"
  cp "$ROOT/../shared/reference/"*.py "$WORK/shared/reference/" 2>/dev/null
  ln -s "$ROOT/../shared/golden" "$WORK/shared/golden" 2>/dev/null
  REF="$WORK/shared/reference"; export M3_SHARED_DIR="$WORK/shared"
fi

# Small shapes off the GPU: the machinery, not the numbers.
if [ "$DEV" = cuda ]; then
  SMALL=(); GPU=(); LONG=(); CONF_BUDGET=${M3_GPU_CHECK_CONF_BUDGET:-80}
else
  SMALL=(--steps 5 --shape '{"layers":2,"plen":64}')
  GPU=(--steps 5 --shape '{"vocab":2000,"hidden":64,"layers":2,"heads":2,"ff":128,"plen":64}')
  LONG=(--shape '{"vocab":2000,"hidden":64,"layers":2,"heads":2,"ff":128,"plen":1024,"maxPos":1030}')
  CONF_BUDGET=${M3_GPU_CHECK_CONF_BUDGET:-30}
fi

elapsed() { echo $(( $(date +%s) - START )); }
wanted() { [ -z "${M3_GPU_CHECK_SECTIONS:-}" ] || [[ ",$M3_GPU_CHECK_SECTIONS,env,patch," == *",$1,"* ]]; }
report() { python3 "$WORK/report.py" "$WORK" "$RESULTS" "$1" || echo "[gpu-check] (the report failed: see above)"; }

# section NAME BUDGET_S LOG CMD...: stdout to $WORK/NAME.out (and the log), stderr to the log.
section() {
  local name=$1 budget=$2 log=$3; shift 3
  local own="M3_GPU_CHECK_BUDGET_${name^^}"; budget=${!own:-$budget}
  local left=$(( TOTAL - $(elapsed) - 5 ))
  if ! wanted "$name"; then return; fi
  if [ $# -eq 0 ]; then printf '%s\tskipped\t0\t-\t%s\tnothing to run here\n' "$name" "$budget" >> "$WORK/sections.tsv"; report "$name"; return; fi
  if [ $left -lt 10 ]; then printf '%s\tskipped\t0\t-\t%s\tno time left\n' "$name" "$budget" >> "$WORK/sections.tsv"; report "$name"; return; fi
  [ "$budget" -gt $left ] && budget=$left
  echo "[gpu-check] $(elapsed)s > $name (budget ${budget}s)"
  printf '\n===== %s (budget %ss): %s\n' "$name" "$budget" "$*" >> "$RESULTS/$log"
  local t0 rc status
  t0=$(date +%s%N)
  timeout --kill-after=10 "$budget" "$@" < /dev/null > "$WORK/$name.out" 2>> "$RESULTS/$log"
  rc=$?
  cat "$WORK/$name.out" >> "$RESULTS/$log"
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$(( ($(date +%s%N) - t0) / 1000000 ))" "$rc" "$budget" "$log" >> "$WORK/sections.tsv"
  report "$name"
}

cat > "$WORK/env.py" <<'PY'
import glob, json, os, shutil, subprocess, sys
dev = sys.argv[1]
def run(cmd, t=20):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=t)
        return (r.stdout or r.stderr).strip()
    except Exception as e:
        return "unavailable (%s)" % e.__class__.__name__
PROBE = ("import json, os, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
         "'cuda_available': c, 'gpu': torch.cuda.get_device_name(0) if c else None, 'dir': os.path.dirname(torch.__file__), "
         "'cxx11_abi': torch.compiled_with_cxx11_abi()}))")
env = {"nvidia_smi": run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]),
       "gxx": run(["g++", "--version"]).split("\n")[0], "nvcc": run(["nvcc", "--version"]).split("\n")[-1],
       "python3": run(["python3", "--version"]), "pythons": {}}
seen = set()
for py in [os.environ.get("M3_PYTHON"), "python3", "/usr/bin/python3", "/opt/torch/.venv/bin/python3"]:
    real = py and shutil.which(py) and os.path.realpath(shutil.which(py))
    if not real or real in seen or "python" in env:  # the first python with torch (and CUDA on cuda) is the one
        continue
    seen.add(real)
    out = run([py, "-c", PROBE], 40)
    try:
        info = json.loads(out.split("\n")[-1])
    except ValueError:
        env["pythons"][py] = out.split("\n")[-1][:200]
        continue
    env["pythons"][py] = info
    if "python" not in env and (dev != "cuda" or info["cuda_available"]):
        env.update(python=py, **info)
if "dir" in env:
    site = os.path.dirname(env["dir"])
    nccl = sorted(glob.glob(os.path.join(site, "nvidia", "**", "nccl.h"), recursive=True))
    env["nccl_h"] = nccl[0] if nccl else None
json.dump(env, open(sys.argv[2], "w"), indent=1)
print(json.dumps(env, indent=1))
PY

# CUDA fixes to bench_torch.py, applied to the bundle's copy (never to ../shared). Each change is an exact
# text replacement, listed in results.json; a change whose text is not found is reported, not guessed.
cat > "$WORK/patch.py" <<'PY'
import ast, json, os, shutil, sys
path, out = sys.argv[1], sys.argv[2]
src = open(path).read()
MARK = "# m3 gpu-check: CUDA fixes applied"
CHANGES = [
 ("weights moved to the device once: the original copied sd/hd to the GPU and kept them beside the trainable clones, so 2.3 GB (bge-m3) of dead weights counted in peak memory",
  '    sd = {k: t.to(DEVICE) for k, t in sd.items()}\n    hd = {k: t.to(DEVICE) for k, t in hd.items()}\n', ''),
 ("(same change) the trainable parameters are device copies of the host weights",
  'params = {k: t.clone().requires_grad_(True) for k, t',
  'params = {k: t.to(DEVICE, copy=True).requires_grad_(True) for k, t'),
 ("AdamW: fused=True on CUDA (M3_BENCH_ADAMW=default for the foreach one); with set_default_device('cuda') the foreach AdamW put its step counters on the GPU and read them back with .item() twice per parameter per step, so the counters are kept on the host as PyTorch does without a default device",
  'opt = torch.optim.AdamW(list(params.values()), lr=1e-5, weight_decay=0.01)\n',
  'ADAMW = os.environ.get("M3_BENCH_ADAMW", "fused" if DEVICE.startswith("cuda") else "default")\n'
  'opt = torch.optim.AdamW(list(params.values()), lr=1e-5, weight_decay=0.01, **({"fused": True} if ADAMW == "fused" else {}))\n'),
 ("(same change) the foreach step under torch.device('cpu')",
  '    opt.step()\n',
  '    if DEVICE != "cpu" and ADAMW != "fused":\n        with torch.device("cpu"):\n            opt.step()\n    else:\n        opt.step()\n'),
 ("SDPA: no mask when nothing is masked (as Hugging Face's SDPA path does), so the flash kernel can run; the bf16 cast of the additive mask turned float32's min into -inf",
  'ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=add_mask.to(q.dtype))',
  'ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=_sdpa_mask(add_mask, q.dtype))'),
 ("(same change) the mask test, once per encoder call",
  'def sdpa_attention(',
  '_MASK = [None, None]\n\n\ndef _sdpa_mask(add_mask, dtype):\n    if _MASK[0] is not add_mask:\n'
  '        _MASK[0], _MASK[1] = add_mask, bool((add_mask == 0).all())\n    return None if _MASK[1] else add_mask.to(dtype)\n\n\ndef sdpa_attention('),
 ("the result line names the GPU and the optimizer",
  'if DEVICE.startswith("cuda"):\n    res["peak_mem_mb"]',
  'res["adamw"] = ADAMW\nif DEVICE.startswith("cuda"):\n    res["gpu"] = torch.cuda.get_device_name()\n    res["peak_mem_mb"]'),
]
report = {"file": path, "applied": [], "missing": []}
if MARK in src:  # a second run over the same copy: say what is in it
    report["already"] = True
    report["applied"] = [why for why, old, new in CHANGES if (new in src if new else old not in src)]
else:
    for why, old, new in CHANGES:
        if src.count(old) == 1:
            src = src.replace(old, new)
            report["applied"].append(why)
        else:
            report["missing"].append(why)
    ast.parse(src)
    if not report["missing"]:  # all or nothing
        if not os.path.exists(path + ".orig"):
            shutil.copy(path, path + ".orig")
        open(path, "w").write(MARK + "\n" + src)
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
sys.exit(1 if report["missing"] else 0)
PY

cat > "$WORK/report.py" <<'PY'
"""gpu-check's report: results.json and summary.txt from the sections run so far (rewritten after each)."""
import json, os, re, sys, time

work, results, which = sys.argv[1], sys.argv[2], sys.argv[3]
TOKENS_MIN, MEM_MAX = 1.0, 1.1
LOGS = ["build.log", "golden.log", "bench.log", "nccl.log", "conformance.log"]


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def rows(name):
    out = []
    for line in read(os.path.join(work, name + ".out")).splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def num(v, d=2):
    return ("%%.%df" % d) % v if isinstance(v, (int, float)) else "-"


def golden(s, name):
    r = [x for x in rows(name) if "case" in x]
    failed = [{"case": x["case"], "error": str(x.get("error", ""))[:200]} for x in r if not x.get("ok")]
    s.update(cases=len(r), ok=len(r) - len(failed), failed=failed)
    if s["status"] == "ok" and (failed or not r):
        s["status"] = "failed"
    s["detail"] = "%d/%d cases ok%s" % (s["ok"], len(r), "; failed: " + ", ".join(f["case"] for f in failed[:8]) if failed else "")


def bench(s, name):
    r = rows(name)
    ours = next((x for x in r if x.get("backend") not in (None, "pytorch")), None)
    base = next((x for x in r if x.get("backend") == "pytorch" or ("error" in x and "backend" not in x)), None)
    keep = ("step_s_median", "tokens_per_s", "peak_mem_mb", "peak_rss_mb", "init_s", "loss", "error", "tensors_start", "tensors_end", "host_s_median",
            "tfjs_kernels_per_step", "addon_calls_per_step", "aten_calls_per_step", "host_ms_per_step", "cpu_model", "cpu_flags", "blas_core", "dnnl_sgemm", "aten_threads")
    if ours:
        s["ours"] = {k: ours[k] for k in keep if k in ours}
        for k in ("tokens_per_s_ratio", "peak_mem_ratio", "ratio_to_pytorch"):
            if k in ours:
                s[k] = ours[k]
    if base:
        s["pytorch"] = {k: base[k] for k in ("step_s_median", "tokens_per_s", "peak_mem_mb", "amp", "sdpa", "sparse", "adamw", "torch", "gpu", "device", "loss", "error") if k in base}
    if "tokens_per_s_ratio" not in s and (ours or {}).get("tokens_per_s") and (base or {}).get("tokens_per_s"):
        s["tokens_per_s_ratio"] = ours["tokens_per_s"] / base["tokens_per_s"]  # the bench adds it on cuda only
    if "tokens_per_s_ratio" in s:
        s["meets_tokens"] = s["tokens_per_s_ratio"] >= TOKENS_MIN
    if "peak_mem_ratio" in s:
        s["meets_memory"] = s["peak_mem_ratio"] <= MEM_MAX
    err = (ours or {}).get("error") or (base or {}).get("error")
    if s["status"] == "ok" and (err or not ours):
        s["status"] = "failed"
    o, p = s.get("ours", {}), s.get("pytorch", {})
    s["detail"] = ("ours %s tok/s %s MB, PyTorch %s tok/s %s MB -> tokens %sx, memory %sx" % (
        num(o.get("tokens_per_s"), 0), num(o.get("peak_mem_mb"), 0), num(p.get("tokens_per_s"), 0), num(p.get("peak_mem_mb"), 0),
        num(s.get("tokens_per_s_ratio")), num(s.get("peak_mem_ratio")))) + ("; error: " + str(err)[:300] if err else "")


def long_bucket(s, name):
    r = rows(name)
    row = r[0] if r else {}
    s["fits"] = bool(row) and "error" not in row and isinstance(row.get("step_s_median"), (int, float))
    s.update({k: row[k] for k in ("step_s_median", "tokens_per_s", "peak_mem_mb", "init_s", "loss", "error", "tensors_start", "tensors_end") if k in row})
    if s["status"] == "ok" and not s["fits"]:
        s["status"] = "failed"
    leak = row.get("tensors_end", 0) - row.get("tensors_start", 0)
    s["detail"] = ("fits: step %s s, peak %s MB%s" % (num(s.get("step_s_median")), num(s.get("peak_mem_mb"), 0), "; %+d tensors over the timed steps" % leak if leak else "")) if s["fits"] else "did not fit/run: %s" % str(s.get("error", s["status"]))[:300]


def nccl(s, name):
    r = rows(name)
    row = r[-1] if r else {}
    s.update({k: row[k] for k in ("ok", "backend", "tensor_device", "nccl_built", "gloo_built", "checks", "error") if k in row})
    log = read(os.path.join(results, "nccl.log"))
    s["nccl_info_lines"] = log.count("NCCL INFO")
    ver = re.search(r"NCCL version [^\n]*", log)
    s["nccl_version"] = ver.group(0) if ver else None
    if s["status"] == "ok" and not row.get("ok"):
        s["status"] = "failed"
    s["detail"] = "%s group, checks %s; %d 'NCCL INFO' lines%s" % (
        row.get("backend", "?"), "ok" if row.get("ok") else "FAILED: " + str(row.get("error") or row.get("checks")), s["nccl_info_lines"],
        "" if not s["nccl_version"] else " (" + s["nccl_version"] + ")")


def conformance(s, name):
    text = read(os.path.join(results, "conformance.log"))
    m = re.findall(r"(\d+) specs ran in [\d.]+ s: (\d+) failed", text)
    if m:
        s.update(specs=int(m[-1][0]), failures=int(m[-1][1]))
    lines = [l for l in text.strip().splitlines() if l.strip() and not l.startswith("=====")]
    verdict = [l for l in lines if l.startswith("torch conformance")]
    s["tail"] = lines[-3:]
    s["detail"] = (verdict[-1] if verdict else " | ".join(lines[-3:]))[-400:]


def tail_of(s, name, log, keys=None):
    text = read(os.path.join(results, log))
    part = text.split("===== %s " % name)[-1].split("\n===== ")[0]
    lines = [l.strip() for l in part.strip().splitlines()[1:] if l.strip()]
    s["tail"] = lines[-3:]
    picked = [l for l in lines if any(l.lstrip("* ").startswith(k) for k in keys)] if keys else lines[-2:]
    s["detail"] = " | ".join(picked)[-300:]


def env_detail(s, env):
    s["detail"] = "%s; torch %s (CUDA %s) from %s; %s" % (env.get("nvidia_smi", "?").split("\n")[0], env.get("torch", "?"), env.get("cuda", "?"), env.get("python", "no python with torch"), env.get("gxx", "?"))


def patch_detail(s, patch):
    s["applied"], s["missing"] = patch.get("applied", []), patch.get("missing", [])
    s["detail"] = ("already patched: " if patch.get("already") else "") + "%d changes applied to %s%s" % (len(s["applied"]), patch.get("file", "?"), "; NOT FOUND: %d" % len(s["missing"]) if s["missing"] else "")


def main():
    meta = dict(l.split("\t", 1) for l in read(os.path.join(work, "meta.tsv")).splitlines() if "\t" in l)
    env = json.loads(read(os.path.join(work, "env.json"), "{}") or "{}")
    patch = json.loads(read(os.path.join(work, "patch.json"), "{}") or "{}")
    sections = {}
    for line in read(os.path.join(work, "sections.tsv")).splitlines():
        name, status, ms, rc, budget, note = (line.split("\t") + [""] * 6)[:6]
        s = {"status": status, "seconds": round(int(ms or 0) / 1000, 1), "rc": None if rc == "-" else int(rc), "budget_s": int(budget)}
        if status == "skipped":
            s["detail"] = note
        elif name in ("golden", "golden_wasm"):
            golden(s, name)
        elif name.startswith("bench_") or name == "bge_m3_gpu":
            bench(s, name)
        elif name == "long_bucket":
            long_bucket(s, name)
        elif name == "nccl":
            nccl(s, name)
        elif name == "conformance":
            conformance(s, name)
        elif name == "env":
            env_detail(s, env)
        elif name == "patch":
            patch_detail(s, patch)
        elif name == "info":
            tail_of(s, name, note, ("torch", "data parallel"))
        else:
            tail_of(s, name, note)
        sections[name] = s
    targets = {}
    ran = lambda n: n in sections and sections[n]["status"] != "skipped"
    for n in ("bge_m3_gpu", "bench_small_bf16", "bench_small_fp32"):
        s = sections.get(n, {})
        targets[n] = {"tokens_per_s_ratio": s.get("tokens_per_s_ratio"), "meets_tokens": s.get("meets_tokens"), "peak_mem_ratio": s.get("peak_mem_ratio"), "meets_memory": s.get("meets_memory")}
    g = sections.get("golden", {})
    targets["golden"] = {"ok": g.get("ok"), "cases": g.get("cases"), "within_tolerance": g["status"] == "ok" if ran("golden") else None}
    targets["long_bucket_fits"] = sections["long_bucket"].get("fits") if ran("long_bucket") else None
    targets["nccl"] = sections["nccl"]["status"] == "ok" if ran("nccl") else None
    elapsed = int(time.time()) - int(meta["start"]) if meta.get("start") else None
    out = {"device": meta.get("device"), "mode": meta.get("mode"), "root": meta.get("root"), "total_budget_s": int(meta.get("total", 0)), "elapsed_s": elapsed,
           "gpu": env.get("gpu") or env.get("nvidia_smi"), "env": env, "targets": {"tokens_per_s_ratio_min": TOKENS_MIN, "peak_mem_ratio_max": MEM_MAX, **targets},
           "sections": sections, "bench_torch_patch": patch}
    with open(os.path.join(results, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    lines = ["m3 GPU check: %s" % (env.get("nvidia_smi") or "no nvidia-smi"),
             "torch %s (CUDA %s) via %s; %s; %s" % (env.get("torch"), env.get("cuda"), env.get("python"), env.get("gxx"), env.get("nvcc")),
             "mode %s (%s), device %s, %ss of %ss" % (meta.get("mode"), meta.get("root"), meta.get("device"), elapsed, meta.get("total")), "",
             "%-17s %-8s %8s  %s" % ("section", "status", "seconds", "result")]
    for n, s in sections.items():
        lines.append("%-17s %-8s %8.1f  %s" % (n, s["status"], s["seconds"], s.get("detail", "")))
    yes = lambda v: "-" if v is None else ("met" if v else "MISSED")
    lines += ["", "Targets (tokens/s >= %.1fx PyTorch, peak memory <= %.1fx PyTorch):" % (TOKENS_MIN, MEM_MAX)]
    for n in ("bge_m3_gpu", "bench_small_bf16", "bench_small_fp32"):
        t = targets[n]
        lines.append("  %-17s tokens %sx (%s)  memory %sx (%s)" % (n, num(t["tokens_per_s_ratio"]), yes(t["meets_tokens"]), num(t["peak_mem_ratio"]), yes(t["meets_memory"])))
    lines.append("  golden on %s:  %s/%s cases within tolerance (%s)" % (meta.get("device"), g.get("ok", "-"), g.get("cases", "-"), yes(targets["golden"]["within_tolerance"])))
    lines.append("  long bucket fits: %s    NCCL world-size-1: %s" % (yes(targets["long_bucket_fits"]), yes(targets["nccl"])))
    if patch.get("applied") or patch.get("missing"):
        lines += ["", "bench_torch.py changes (%s):" % patch.get("file")] + ["  - " + c for c in patch.get("applied", [])] + ["  ! not found: " + c for c in patch.get("missing", [])]
    with open(os.path.join(results, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for log in LOGS:  # bounded logs: the head and the tail
        p = os.path.join(results, log)
        text = read(p)
        if len(text) > 600_000:
            with open(p, "w") as f:
                f.write(text[:100_000] + "\n[... %d characters cut ...]\n" % (len(text) - 500_000) + text[-400_000:])
    if which == "--final":
        print("\n".join(lines))
    elif which in sections:
        s = sections[which]
        print("[gpu-check] %-17s %-8s %6.1fs  %s" % (which, s["status"], s["seconds"], s.get("detail", "")[:400]))


main()
PY

echo "[gpu-check] $MODE at $ROOT, device $DEV, results in $RESULTS, ${TOTAL}s in all"
printf 'mode\t%s\nroot\t%s\ndevice\t%s\ntotal\t%s\nstart\t%s\n' "$MODE" "$ROOT" "$DEV" "$TOTAL" "$START" > "$WORK/meta.tsv"

section env 60 build.log python3 "$WORK/env.py" "$DEV" "$WORK/env.json"
PY_TORCH=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("python", ""))' "$WORK/env.json" 2>/dev/null)
[ -n "$PY_TORCH" ] && export M3_PYTHON=$PY_TORCH
NCCL_H=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("nccl_h") or "")' "$WORK/env.json" 2>/dev/null)
[ -n "$NCCL_H" ] && [ -z "${NCCL_INCLUDE_DIR:-}" ] && export NCCL_INCLUDE_DIR=$(dirname "$NCCL_H")
section patch 20 bench.log python3 "$WORK/patch.py" "$REF/bench_torch.py" "$WORK/patch.json"

section build 170 build.log "${BUILD[@]}"
section info 40 build.log "${M3[@]}" info --device "$DEV"
section golden 90 golden.log "${GOLDEN[@]}" --backend torch --device "$DEV" --json
section bge_m3_gpu 170 bench.log "${BENCH[@]}" train --device "$DEV" --bf16 --model bge-m3-gpu --json "${GPU[@]}"
section bench_small_bf16 60 bench.log "${BENCH[@]}" train --device "$DEV" --backend torch --bf16 --json "${SMALL[@]}"
section long_bucket 100 bench.log "${BENCH[@]}" train --device "$DEV" --bf16 --model long-bucket --json "${LONG[@]}"
# where a step's host time goes: per-kernel wall time (on CUDA: the time to queue it) and the cost of one op
section profile 60 bench.log env M3_TORCH_PROFILE=1 "${BENCH[@]}" train --child --backend torch --device "$DEV" --bf16 --model bge-m3-gpu "${GPU[@]}"
section profile_sync 90 bench.log env M3_TORCH_PROFILE=sync "${BENCH[@]}" train --child --backend torch --device "$DEV" --bf16 --model bge-m3-gpu "${GPU[@]}"
section overhead 60 bench.log "${BENCH[@]}" overhead --device "$DEV" --json
section nccl 45 nccl.log env NCCL_DEBUG=INFO "${BENCH[@]}" nccl --device "$DEV" --json
section conformance $(( CONF_BUDGET + 30 )) conformance.log "${CONF[@]}" --device "$DEV" --budget "$CONF_BUDGET"
section bench_small_fp32 60 bench.log "${BENCH[@]}" train --device "$DEV" --backend torch --json "${SMALL[@]}"
section golden_wasm 60 golden.log "${GOLDEN[@]}" --backend wasm --device cpu --json

echo "[gpu-check] done in $(elapsed)s"
python3 "$WORK/report.py" "$WORK" "$RESULTS" --final
rm -rf "$WORK"
