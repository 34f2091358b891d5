"""Compress a directory of images and WAV files with Ray: one task per shard, each running
`wring.encode_shard` (the Python bindings' form of `wring encode DIR --shard I/N`). Shards split the inputs
(every N-th in name order), outputs appear only when complete and finished ones are skipped, so a failed or
preempted task is simply retried: Ray's `max_retries` does that here.

    python3 deploy/ray_encode.py IN_DIR OUT_DIR [--shards N] [--bpp B]

On a cluster, `ray.init()` joins it (RAY_ADDRESS) and IN_DIR / OUT_DIR must be on storage every node sees;
alone it starts a local Ray. `deploy/ray_run.txt` records a local run.
"""

import argparse
import json
import time

import ray

import wring


@ray.remote(num_cpus=1, max_retries=3)
def encode_shard(src, dst, index, count, bpp):
    # The import happens on the worker: each task opens its own device context there.
    start = time.time()
    summary = wring.encode_shard(src, dst, index=index, count=count, bpp=bpp)
    summary["shard"] = f"{index}/{count}"
    summary["seconds"] = round(time.time() - start, 2)
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--bpp", type=float, default=None)
    args = ap.parse_args()
    ray.init()
    results = ray.get([encode_shard.remote(args.src, args.dst, i, args.shards, args.bpp) for i in range(args.shards)])
    for r in results:
        print(json.dumps(r))
    failed = sum(len(r["failed"]) for r in results)
    print(f"{sum(r['done'] for r in results)} written, {sum(r['skipped'] for r in results)} skipped, {failed} failed")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
