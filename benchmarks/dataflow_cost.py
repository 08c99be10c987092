"""What mining a billion pairs costs on Dataflow, from one local run's measured CPU time and shuffle bytes.

    python benchmarks/dataflow_cost.py [--pairs 1000000] [--target-pairs 1e9] [--vcpu-hour 0.056] ...

Runs the default pretrain chain (every option at its default) in this process, on ``--pairs`` distinct
multilingual pairs (mining_throughput's builder, from the shared Tatoeba data), with an FnApiRunner that
records for each fused stage its wall and CPU seconds, and for every shuffle (each GroupByKey, also those
inside CoGroupByKey and the combiners Beam lifts) the bytes of its input as Beam's coders encode them: the
SDK's sampled element sizes times the element count, what Dataflow Shuffle bills as data processed. It prints
the local figures (time, peak RSS, each stage) and then the Dataflow estimate, with its assumptions:

- CPU: the run's CPU seconds per input pair, one worker process per vCPU (Dataflow's Python default), at
  ``--efficiency`` of a local core (Dataflow's own overhead, stragglers, start-up), on ``n2-highmem-4``
  workers (4 vCPU, 32 GB) with a 25 GB boot disk.
- Shuffle: the measured bytes per pair, scaled linearly (the chain's shuffles carry keys, ids and records,
  each in proportion to the input).
- Prices: the flags' defaults are us-east1's batch list prices as this was written (vCPU $0.056/h, memory
  $0.003557/GB-h, standard disk $0.000054/GB-h, Dataflow Shuffle $0.011/GB); check yours.
- The consistency filter on GPU workers (one T4 on an n1-standard-4): embedding is not measured here (no GPU
  on the machine this was written on); ``--gpu-pairs-per-second`` is an assumed encoder throughput (query and
  passage of each pair, mE5-base at fp16 and 128 tokens). Ranking each pair against the 10,000-passage pool is
  measured: ``mining.consistency.passage_ranks`` at 768 dimensions, batches of 512, one BLAS thread, on the
  worker's vCPUs. A worker runs as fast as the slower of the two.
"""

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from apache_beam.metrics import monitoring_infos
from apache_beam.portability import common_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from mining_throughput import build_input  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from beam_runner import run_pipeline  # noqa: E402
from mining import consistency  # noqa: E402

GROUP_BY_KEY = common_urns.primitives.GROUP_BY_KEY.urn
FLATTEN = common_urns.primitives.FLATTEN.urn
N2_HIGHMEM_4 = {"vcpus": 4, "memory_gb": 32}
BOOT_DISK_GB = 25


class MeteredRunner(FnApiRunner):
    """An FnApiRunner that keeps, per fused stage, wall and CPU seconds, and per shuffle its input's elements
    and encoded bytes."""

    def run_stages(self, stage_context, stages):
        components = stage_context.components
        self.shuffled = _shuffle_inputs(components)  # PCollection -> the shuffle (top-level step) it feeds
        self.stage_seconds = defaultdict(lambda: [0.0, 0.0])
        self.elements, self.sampled = defaultdict(int), defaultdict(lambda: [0, 0])  # PCollection -> n; [sum, count]
        self._steps_of_stage = {
            stage.name: "+".join(dict.fromkeys(_top_level(t.unique_name) for t in stage.transforms
                                               if t.unique_name and not t.unique_name.startswith("ref_PCollection")))
            for stage in stages
        }
        return super().run_stages(stage_context, stages)

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        wall, cpu = time.perf_counter(), time.process_time()
        result = super()._execute_bundle(runner_execution_context, bundle_context_manager, bundle_input)
        seconds = self.stage_seconds[self._steps_of_stage.get(bundle_context_manager.stage.name, "?")]
        seconds[0] += time.perf_counter() - wall
        seconds[1] += time.process_time() - cpu
        for info in result.process_bundle.monitoring_infos:
            pcollection = info.labels.get(monitoring_infos.PCOLLECTION_LABEL)
            if pcollection not in self.shuffled:
                continue
            if info.urn == monitoring_infos.ELEMENT_COUNT_URN:
                self.elements[pcollection] += monitoring_infos.extract_counter_value(info)
            elif info.urn == monitoring_infos.SAMPLED_BYTE_SIZE_URN:
                distribution = monitoring_infos.extract_distribution(info)
                self.sampled[pcollection][0] += distribution[1]
                self.sampled[pcollection][1] += distribution[0]
        return result

    def shuffle_bytes(self) -> dict[str, tuple[int, float]]:
        """Each shuffle's input: elements and estimated encoded bytes."""
        totals = defaultdict(lambda: [0, 0.0])
        for pcollection, shuffle in self.shuffled.items():
            n = self.elements.get(pcollection, 0)
            sampled_sum, sampled_count = self.sampled.get(pcollection, (0, 0))
            totals[shuffle][0] += n
            totals[shuffle][1] += n * sampled_sum / sampled_count if sampled_count else 0.0
        return {shuffle: (n, size) for shuffle, (n, size) in totals.items()}


def _top_level(unique_name: str) -> str:
    return unique_name.removeprefix("ref_AppliedPTransform_").split("/")[0]


def _shuffle_inputs(components) -> dict[str, str]:
    """The PCollections whose elements cross a shuffle -> the top-level step of that shuffle. A Flatten before
    a GroupByKey (CoGroupByKey's) is run as its inputs writing into one buffer: its inputs are counted."""
    producer = {pc: t for t in components.transforms.values() for pc in t.outputs.values()}
    inputs = {}
    for transform in components.transforms.values():
        if transform.spec.urn != GROUP_BY_KEY:
            continue
        pending = list(transform.inputs.values())
        while pending:
            pcollection = pending.pop()
            source = producer.get(pcollection)
            if source is not None and source.spec.urn == FLATTEN:
                pending.extend(source.inputs.values())
            else:
                inputs[pcollection] = _top_level(transform.unique_name)
    return inputs


def _run(source: Path, output: Path) -> tuple[MeteredRunner, float, float]:
    """The default mining run of SOURCE, as ``beam_runner.py`` runs it, on a metered runner."""
    runner = MeteredRunner()
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(None):  # the run's own summary: this script prints its figures
        run_pipeline([f"--source=sbert={source}", f"--output={output}", "--quiet"], runner=runner)
    return runner, time.perf_counter() - wall, time.process_time() - cpu


def ranking_rows_per_core(dimensions: int = 768, batch: int = 512, repeats: int = 5) -> float:
    """Pairs a core ranks per CPU second against the default pool, on random unit vectors."""
    rng = np.random.default_rng(0)

    def unit(rows: int) -> np.ndarray:
        vectors = rng.standard_normal((rows, dimensions)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    pool_size = consistency.ConsistencyOptions.pool_size
    pool, pool_keys = unit(pool_size), np.arange(pool_size, dtype=np.uint64)
    queries, passages = unit(batch), unit(batch)
    passage_keys = np.arange(pool_size, pool_size + batch, dtype=np.uint64)
    with threadpool_limits(limits=1, user_api="blas"):
        consistency.passage_ranks(queries, passages, passage_keys, pool, pool_keys)  # warm
        start = time.process_time()
        for _ in range(repeats):
            consistency.passage_ranks(queries, passages, passage_keys, pool, pool_keys)
        return batch * repeats / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100000, help="distinct input pairs of the local run")
    parser.add_argument("--target-pairs", type=float, default=1e9)
    parser.add_argument("--efficiency", type=float, default=0.7, help="of a local core, on a Dataflow vCPU")
    parser.add_argument("--vcpu-hour", type=float, default=0.056)
    parser.add_argument("--gb-hour", type=float, default=0.003557, help="worker memory")
    parser.add_argument("--disk-gb-hour", type=float, default=0.000054)
    parser.add_argument("--shuffle-gb", type=float, default=0.011)
    parser.add_argument("--gpu-pairs-per-second", type=float, default=1000.0, help="assumed, see above")
    parser.add_argument("--gpu-hour", type=float, default=0.35, help="one T4 on a Dataflow worker")
    parser.add_argument("--gpu-worker-vcpus", type=int, default=4, help="the n1-standard-4 host of the GPU")
    parser.add_argument("--gpu-worker-gb", type=float, default=15.0)
    args = parser.parse_args()
    if args.pairs < 1000 or not 0 < args.efficiency <= 1:
        parser.error("--pairs must be at least 1000 and --efficiency in (0, 1]")
    if args.target_pairs <= 0 or args.gpu_pairs_per_second <= 0 or args.gpu_worker_vcpus < 1:
        parser.error("--target-pairs, --gpu-pairs-per-second and --gpu-worker-vcpus must be positive")
    prices = ("vcpu_hour", "gb_hour", "disk_gb_hour", "shuffle_gb", "gpu_hour", "gpu_worker_gb")
    if any(getattr(args, price) < 0 for price in prices):
        parser.error("prices and memory sizes cannot be negative")
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "pairs.jsonl"
        build_input(source, args.pairs)
        input_bytes = source.stat().st_size
        runner, wall, cpu = _run(source, Path(scratch) / "out")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"local run, {args.pairs:,} distinct pairs ({input_bytes / 2**20:,.0f} MiB of JSON lines), one worker: "
          f"{wall:,.1f} s wall, {cpu:,.1f} s CPU, {args.pairs / wall:,.0f} pairs/s, peak RSS {peak_mib:,.0f} MiB")
    print("\nfused stages (top-level steps), wall / CPU seconds:")
    for steps, (stage_wall, stage_cpu) in sorted(runner.stage_seconds.items(), key=lambda item: -item[1][0]):
        print(f"  {stage_wall:8.1f} {stage_cpu:8.1f}  {steps}")
    shuffles = runner.shuffle_bytes()
    shuffled = sum(size for _, size in shuffles.values())
    print("\nshuffles: elements and encoded bytes of their input (per input pair)")
    for shuffle, (n, size) in sorted(shuffles.items(), key=lambda item: -item[1][1]):
        print(f"  {shuffle:<28} {n:>12,} elements {size / 2**20:>10,.1f} MiB  ({size / args.pairs:,.0f} B/pair)")
    print(f"  {'all':<28} {'':>21} {shuffled / 2**20:>10,.1f} MiB  ({shuffled / args.pairs:,.0f} B/pair)")

    scale = args.target_pairs / args.pairs
    vcpu_hours = cpu * scale / 3600 / args.efficiency
    worker_hours = vcpu_hours / N2_HIGHMEM_4["vcpus"]
    shuffle_gb = shuffled * scale / 1e9
    compute = worker_hours * (N2_HIGHMEM_4["vcpus"] * args.vcpu_hour + N2_HIGHMEM_4["memory_gb"] * args.gb_hour)
    disk = worker_hours * BOOT_DISK_GB * args.disk_gb_hour
    ranking = ranking_rows_per_core()
    worker_rate = min(args.gpu_pairs_per_second, ranking * args.gpu_worker_vcpus)
    gpu_hours = args.target_pairs / worker_rate / 3600
    gpu_cost = gpu_hours * (args.gpu_hour + args.gpu_worker_vcpus * args.vcpu_hour + args.gpu_worker_gb * args.gb_hour)
    print(f"\nDataflow, {args.target_pairs:,.0f} pairs (x{scale:,.0f} the local run), assumptions in this script's docstring:")
    print("  | item | quantity | cost (USD) |\n  |---|---|---|")
    print(f"  | mining CPU, n2-highmem-4 at {args.efficiency:.0%} of a local core | {vcpu_hours:,.0f} vCPU-h = "
          f"{worker_hours:,.0f} worker-h | {compute:,.0f} |")
    print(f"  | boot disks, {BOOT_DISK_GB} GB each | {worker_hours * BOOT_DISK_GB:,.0f} GB-h | {disk:,.0f} |")
    print(f"  | Dataflow Shuffle | {shuffle_gb:,.0f} GB | {shuffle_gb * args.shuffle_gb:,.0f} |")
    print(f"  | mining total | {worker_hours / 100:,.1f} h on 100 workers | {compute + disk + shuffle_gb * args.shuffle_gb:,.0f} |")
    print(f"  | consistency filter, T4 workers: embedding {args.gpu_pairs_per_second:,.0f} pairs/s (assumed), ranking "
          f"{ranking:,.0f} pairs/s per vCPU (measured) x {args.gpu_worker_vcpus} | {gpu_hours:,.0f} GPU-h | {gpu_cost:,.0f} |")


if __name__ == "__main__":
    main()
