"""torch.distributed baseline for `npm run bench -- dist` (bench/dist.ts starts one process per rank).

    python3 bench/dist_torch.py allreduce RANK WORLD PORT SPEC_JSON

SPEC_JSON: {"threads": 1, "warmup": 2, "sizes": [{"bytes": N, "iters": K}, ...]}. Rank 0 prints one
JSON object per size on stdout: {"bytes", "iters", "times_s": [...]} (seconds per all_reduce, each
after a barrier). Needs torch with gloo (Debian's python3-torch: /usr/bin/python3).
"""
import json
import sys
import time

import torch
import torch.distributed as dist


def allreduce(rank, world, port, spec):
    torch.set_num_threads(spec.get("threads", 1))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    for size in spec["sizes"]:
        n = size["bytes"] // 4
        t = torch.ones(n, dtype=torch.float32)
        times = []
        for i in range(spec["warmup"] + size["iters"]):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)  # in place, sum
            dt = time.perf_counter() - t0
            if i >= spec["warmup"]:
                times.append(dt)
            t.fill_(1.0)  # keep the values (and so the arithmetic) the same every iteration
        if rank == 0:
            print(json.dumps({"bytes": size["bytes"], "iters": size["iters"], "times_s": times}), flush=True)
        del t
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    part, rank, world, port, spec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
    if part != "allreduce":
        raise SystemExit(f"dist_torch.py: unknown part {part}")
    allreduce(rank, world, port, spec)
