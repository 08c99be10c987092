"""Near-duplicate removal on the Beam engine: LSH buckets and connected components through shuffles.

Every step is a grouping by key, so memory per worker is bounded by one
bucket, or one node's neighbours, never by the corpus or the number of
clusters. The records themselves are shuffled once, keyed by id, to meet
their verdict.
"""

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from mining import near_dup
from mining.records import Drop
from pipelines.reporting import METRICS_NAMESPACE, REPORT, ReportingDoFn, RunContext
from schemas import pairs as f
from schemas import reasons

_RECORD = "record"
_CLUSTER = "cluster"
_LOG = logging.getLogger(__name__)


class _BandKeys(beam.DoFn):
    def __init__(self, options: near_dup.NearDupOptions, passage_dedup_by_source: dict[str, bool]):
        self._options = options
        self._passage_dedup_by_source = passage_dedup_by_source

    def setup(self):
        self._hasher = self._options.hasher()

    def process(self, batch):
        yield from near_dup.band_keys(batch, self._hasher, self._options, self._passage_dedup_by_source)


def _bucket_edges(keyed_bucket):
    _, ids = keyed_bucket
    return near_dup.bucket_edges(ids)


def _both_directions(edge):
    larger, smaller = edge
    return (larger, smaller), (smaller, larger)


def _large_star(grouped):
    node, neighbours = grouped
    return near_dup.large_star(node, neighbours)


def _small_star(grouped):
    node, smaller_neighbours = grouped
    return near_dup.small_star(node, smaller_neighbours)


class _StarRound(beam.PTransform):
    """One large-star then one small-star operation on the edges."""

    def expand(self, edges):
        return (
            edges
            | "BothDirections" >> beam.FlatMap(_both_directions)
            | "ByNode" >> beam.GroupByKey()
            | "LargeStar" >> beam.FlatMap(_large_star)
            | "ByLargerNode" >> beam.GroupByKey()
            | "SmallStar" >> beam.FlatMap(_small_star)
        )


class _ClusterOf(beam.DoFn):
    """(id, cluster id) of every pair to drop."""

    def __init__(self):
        self._unresolved_counter = Metrics.counter(METRICS_NAMESPACE, "near_dup_unresolved_nodes")

    def start_bundle(self):
        self._unresolved = 0

    def process(self, grouped):
        node, smaller_neighbours = grouped
        cluster, resolved = near_dup.cluster_of(smaller_neighbours)
        self._unresolved += not resolved
        yield node, cluster

    def finish_bundle(self):
        if self._unresolved:
            # Only recall suffers: those pairs are dropped all the same, but
            # their components may keep more than one pair.
            self._unresolved_counter.inc(self._unresolved)
            _LOG.warning(
                "near-duplicate clusters unresolved at %d pair(s) after the last star round; raise --near-dup-rounds",
                self._unresolved,
            )


class _DropClustered(ReportingDoFn):
    STAGE = reasons.NEAR_DUP

    def process(self, joined):
        _, grouped = joined
        clusters = list(grouped[_CLUSTER])
        for record in grouped[_RECORD]:
            if clusters:
                self._drop_all([Drop(record, reasons.NEAR_DUPLICATE, f"cluster {clusters[0]}")])
            else:
                yield record


class ResolveClusters(beam.PTransform):
    """Edges (larger id, smaller id) -> (id, cluster id) for every id with a smaller neighbour.

    A fixed number of star rounds, since a Beam graph cannot loop until done.
    Kiveris et al. bound the rounds a component of n ids needs by O(log² n);
    in simulations a path of 1000 random ids (the slowest shape) needed up to
    9, a random tree of 10,000 up to 7. A round after convergence changes
    nothing, and a round shuffles only the edges, which near-copies alone make.
    """

    def __init__(self, rounds: int):
        super().__init__()
        self._rounds = rounds

    def expand(self, edges):
        for round_index in range(self._rounds):
            edges = edges | f"StarRound{round_index}" >> _StarRound()
        return (
            edges
            | "SmallerNeighbours" >> beam.GroupByKey()
            | "ClusterOf" >> beam.ParDo(_ClusterOf())
        )


class NearDedup(beam.PTransform):
    """Keep one pair per cluster of near-duplicates (the smallest id); the rest are dropped."""

    def __init__(
        self, options: near_dup.NearDupOptions, passage_dedup_by_source: dict[str, bool], run: RunContext
    ):
        super().__init__()
        self._options = options
        self._passage_dedup_by_source = passage_dedup_by_source
        self._run = run

    def expand(self, records):
        edges = (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=self._run.batch_size, max_batch_size=self._run.batch_size)
            | "BandKeys" >> beam.ParDo(_BandKeys(self._options, self._passage_dedup_by_source))
            | "Buckets" >> beam.GroupByKey()
            | "BucketEdges" >> beam.FlatMap(_bucket_edges)
        )
        clusters = edges | "Clusters" >> ResolveClusters(self._options.rounds)
        keyed = records | "ById" >> beam.Map(lambda record: (record[f.ID], record))
        return (
            {_RECORD: keyed, _CLUSTER: clusters}
            | "Join" >> beam.CoGroupByKey()
            | "DropClustered" >> beam.ParDo(_DropClustered(self._run)).with_outputs(REPORT, main="kept")
        )
