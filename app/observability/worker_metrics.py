"""Prometheus metrics of a worker process, on their own registry.

The API's /metrics derives run counts, the active version and the last gate scores from the
database (app/observability/metrics.py `RunsCollector`), which is right however many workers there are.
These are the figures only the process that trains can know: what it ran, how long that took
and how its last gate went.  A stand-alone worker serves them with `serve(port)`
(`run_worker(..., metrics_port=…)`); an embedded worker's can be added to the API's output
by collecting `REGISTRY` as well.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

RUNS = Counter(
    "flywheel_worker_runs_total",
    "Training runs handled by this worker, by outcome: started, promoted, rejected, failed, requeued "
    "(interrupted by shutdown), abandoned (taken away after a lost heartbeat)",
    ["task", "outcome"],
    registry=REGISTRY,
)
RUN_SECONDS = Histogram(
    "flywheel_worker_run_seconds",
    "Wall time of runs this worker finished (promoted, rejected or failed)",
    ["task"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
GATE_SCORE = Gauge(
    "flywheel_worker_gate_score",
    "Gate score of the last candidate this worker judged, and of the active version it faced",
    ["task", "model"],
    registry=REGISTRY,
)
GATE_PROMOTED = Gauge(
    "flywheel_worker_gate_promoted", "1 if the last candidate this worker judged was promoted, else 0", ["task"],
    registry=REGISTRY,
)
GATE_DECISIONS = Counter(
    "flywheel_worker_gate_decisions_total", "Gate decisions of this worker: promote, reject, inconclusive",
    ["task", "decision"], registry=REGISTRY,
)
REAPED = Counter(
    "flywheel_worker_reaped_total", "Runs this worker's reaper failed because their worker went silent", ["task"],
    registry=REGISTRY,
)
STORE_BYTES = Gauge("flywheel_worker_model_store_bytes", "Bytes in the model store after the last retention pass",
                    registry=REGISTRY)
BUSY = Gauge("flywheel_worker_busy", "1 while this worker is executing a run", registry=REGISTRY)


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Expose REGISTRY at http://addr:port/metrics from a daemon thread."""
    start_http_server(port, addr=addr, registry=REGISTRY)
