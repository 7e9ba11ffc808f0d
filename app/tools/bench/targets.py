"""The bench's targets and the headline ratios they are judged on, derived from the measured
numbers alone: every part fills its own keys, this turns them into ratios and verdicts."""

from __future__ import annotations

from typing import Any

from app.tools.bench.driving import ratio

TARGETS = {
    "http_c32_vs_ceiling_bs32": (">=", 0.90),
    "c64_vs_naive": (">=", 4.0),
    "p50_c1_vs_one_forward": ("<=", 1.2),
    "feedback_per_s_postgres": (">=", 1500.0),
    "feedback_p99_ms_postgres": ("<=", 50.0),
    "swap_failed_requests": ("<=", 0),
    "swap_p99_ratio": ("<=", 2.0),
    "int8_accuracy_drop_points": ("<=", 1.0),
    "served_engine_accuracy_drop_points": ("<=", 0.5),
    "feedback_ratio_to_bare_postgres": (">=", 0.5),
    "trainer_ratio_to_bare_loop": (">=", 0.95),
}


def derive(d: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios and the verdict on each target."""
    http = {h["concurrency"]: h for h in d.get("http", [])}
    ceil = d.get("ceiling_texts_per_s", {})
    naive = d.get("naive", {})
    fb_pg, fb_sq = d.get("feedback_postgres") or {}, d.get("feedback_sqlite") or {}
    d["naive_texts_per_s_c32"] = (naive.get("32") or {}).get("texts_per_s")
    d["naive_texts_per_s_c64"] = (naive.get("64") or {}).get("texts_per_s")
    d["ratio_to_ceiling_c32"] = ratio((http.get(32) or {}).get("texts_per_s"), ceil.get("32"))
    # The same comparison in CPU time per text: robust to other work on the machine.
    d["cpu_ratio_to_ceiling_c32"] = ratio((d.get("ceiling_cpu_ms_per_text") or {}).get("32"),
                                          (http.get(32) or {}).get("server_cpu_ms_per_text"))
    d["speedup_vs_naive_c64"] = ratio((http.get(64) or {}).get("texts_per_s"), d["naive_texts_per_s_c64"])
    d["speedup_vs_naive_c32"] = ratio((http.get(32) or {}).get("texts_per_s"), d["naive_texts_per_s_c32"])
    # What batching alone can buy on this machine: the forward at 64 texts against 64 forwards of one.
    d["batching_bound_bs64_vs_bs1"] = ratio(ceil.get("64"), ceil.get("1"))
    d["p50_c1_ratio_to_forward"] = ratio((http.get(1) or {}).get("p50_ms"), d.get("one_forward_ms"))
    # The ceiling and the one forward above are the best engine's (inprocess.model_parts).
    d["ratio_to_best_engine_c32"] = d["ratio_to_ceiling_c32"]
    d["p50_c1_ratio_to_best_forward"] = d["p50_c1_ratio_to_forward"]
    d["feedback_ratio_to_bare_postgres"] = ratio(fb_pg.get("requests_per_s"),
                                                 (d.get("feedback_bare_postgres") or {}).get("requests_per_s"))
    engines = d.get("engines") or {}
    served = engines.get(d.get("served_engine") or "", {})
    d["served_engine_accuracy_delta_points"] = (None if "accuracy" not in served or "accuracy" not in
                                                engines.get("torch-fp32", {}) else
                                                served["accuracy"] - engines["torch-fp32"]["accuracy"])
    d["feedback_per_s_postgres"] = fb_pg.get("requests_per_s")
    d["feedback_p99_ms_postgres"] = fb_pg.get("p99_ms")
    d["feedback_per_s_sqlite"] = fb_sq.get("requests_per_s")
    d["feedback_p99_ms_sqlite"] = fb_sq.get("p99_ms")
    swap = d.get("swap") or {}
    d["swap_failed_requests"] = swap.get("failed_requests")
    d["swap_p99_ratio"] = swap.get("swap_p99_ratio")
    d["trainer_ratio_to_bare_loop"] = (d.get("trainer") or {}).get("ratio")
    delta = d.get("int8_accuracy_delta_points")
    measured = {
        "http_c32_vs_ceiling_bs32": d["ratio_to_ceiling_c32"],
        "c64_vs_naive": d["speedup_vs_naive_c64"],
        "p50_c1_vs_one_forward": d["p50_c1_ratio_to_forward"],
        "feedback_per_s_postgres": d["feedback_per_s_postgres"],
        "feedback_p99_ms_postgres": d["feedback_p99_ms_postgres"],
        "swap_failed_requests": d["swap_failed_requests"],
        "swap_p99_ratio": d["swap_p99_ratio"],
        "int8_accuracy_drop_points": None if delta is None else max(0.0, -delta),
        "served_engine_accuracy_drop_points": (None if d["served_engine_accuracy_delta_points"] is None else
                                               max(0.0, -d["served_engine_accuracy_delta_points"])),
        "feedback_ratio_to_bare_postgres": d["feedback_ratio_to_bare_postgres"],
        "trainer_ratio_to_bare_loop": d["trainer_ratio_to_bare_loop"],
    }
    targets = {}
    for name, (op, bound) in TARGETS.items():
        v = measured[name]
        met = None if v is None else (v >= bound if op == ">=" else v <= bound)
        targets[name] = {"value": v, "target": f"{op} {bound:g}", "met": met}
    d["targets"] = targets
    return d
