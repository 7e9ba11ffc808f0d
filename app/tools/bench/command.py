"""`flywheel bench serving`: the typer sub-app and its rich report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

bench_app = typer.Typer(help="Benchmarks that report ratios measured in one run.", no_args_is_help=True,
                        add_completion=False)
console = Console(stderr=True)


@bench_app.command("serving")
def serving(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every number to this JSON file."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Texts and answers: a text,label CSV, a "
                                            "text,score CSV or .jsonl {text, spans}; the task's kind is the one that "
                                            "reads the file's shape, zero-shot. Default: SST-2 dev from the shared "
                                            "data folder."),
    requests: Optional[int] = typer.Option(None, "--requests", min=10,
                                           help="Requests per HTTP run (default 2000, quick 200)."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes: a smoke run of a few minutes."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch threads for the forward and the server "
                                "(0: torch's default for this machine)."),
    parts: str = typer.Option("all", "--parts", help="Comma-separated subset of: ceiling, int8, http, swap, "
                              "feedback, naive, postgres, trainer."),
    postgres: Optional[str] = typer.Option(
        None, "--postgres", help="Admin URL of the PostgreSQL server where a fresh database is created and dropped "
        "(default postgresql+psycopg://postgres@127.0.0.1:5432/postgres; 'none' skips it)."),
) -> None:
    """Ceiling forward, HTTP at c=1/8/32/64, naive baseline, feedback ingest, hot swap, int8, trainer."""
    from app.tools.bench.parts import PART_NAMES
    from app.tools.bench.serving import DEFAULT_PG_ADMIN, BenchConfig, default_csv, run_bench, write_json
    from app.process.runtime import configure_runtime
    from app.core.config import get_settings

    path = csv_path or default_csv()
    if path is None or not path.is_file():
        console.print("[red]No CSV: pass --csv PATH (columns text,label); SST-2 dev was not found beside the "
                      "project.[/red]")
        raise typer.Exit(2)
    chosen = PART_NAMES if parts.strip() == "all" else tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PART_NAMES))
    if unknown:
        console.print(f"[red]Unknown part(s): {', '.join(unknown)}; choose from {', '.join(PART_NAMES)}.[/red]")
        raise typer.Exit(2)
    configure_runtime(get_settings())
    pg = None if (postgres or "").lower() == "none" else (postgres or DEFAULT_PG_ADMIN)
    cfg = BenchConfig.make(csv_path=path, requests=requests, quick=quick, threads=threads, postgres=pg,
                           parts=chosen, log=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    result = run_bench(cfg)
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(report(result))
    if json_path is not None:
        write_json(result, json_path)
        console.print(f"wrote {json_path}")


def _f(v: Any, digits: int = 1, suffix: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    return f"{v}{suffix}"


def report(d: dict[str, Any]) -> Table:
    m = d["machine"]
    t = Table(title=f"flywheel bench serving — {m['cores']} cores, {d['threads']} torch threads, "
                    f"load avg {m.get('loadavg_start')} → {m.get('loadavg_end')}",
              show_lines=False, title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("p50 ms", justify="right")
    t.add_column("p95 ms", justify="right")
    t.add_column("p99 ms", justify="right")
    t.add_column("notes")
    cpu = d.get("ceiling_cpu_ms_per_text", {})
    for bs, v in d.get("ceiling_texts_per_s", {}).items():
        t.add_row(f"ceiling forward bs={bs}", f"{_f(v)} texts/s", "", "", "",
                  f"in-process score_texts; {_f(cpu.get(bs), 2)} CPU ms/text")
    if "one_forward_ms" in d:
        t.add_row("one bare forward (1 text)", f"{_f(d.get('one_forward_ms'), 2)} ms", "", "", "", "median")
    t.add_section()
    for h in d.get("http", []):
        t.add_row(f"HTTP predict c={h['concurrency']}", f"{_f(h['texts_per_s'])} texts/s", _f(h["p50_ms"]),
                  _f(h["p95_ms"]), _f(h["p99_ms"]),
                  f"{h['errors']} errors, mean batch {_f(h.get('mean_batch_texts'))}, server "
                  f"{_f(h.get('server_cpu_ms_per_text'), 2)} CPU ms/text, loadgen CPU "
                  f"{_f(100 * h['loadgen_cpu_share'], 0)}%")
    for c, h in (d.get("naive") or {}).items():
        t.add_row(f"naive (batching off) c={c}", f"{_f(h['texts_per_s'])} texts/s", _f(h["p50_ms"]),
                  _f(h["p95_ms"]), _f(h["p99_ms"]),
                  f"{h['errors']} errors, server {_f(h.get('server_cpu_ms_per_text'), 2)} CPU ms/text")
    t.add_section()
    for db in ("sqlite", "postgres"):
        fb = d.get(f"feedback_{db}") or {}
        if "skipped" in fb:
            t.add_row(f"feedback c=32 {db}", "skipped", "", "", "", fb["skipped"][:60])
        elif fb:
            t.add_row(f"feedback c=32 {db}", f"{_f(fb['requests_per_s'])} req/s", _f(fb["p50_ms"]),
                      _f(fb["p95_ms"]), _f(fb["p99_ms"]),
                      f"{fb['errors']} errors, server {_f(fb.get('server_cpu_ms_per_request'), 2)} CPU ms/req, "
                      f"loadgen CPU {_f(100 * fb['loadgen_cpu_share'], 0)}%")
    sw = d.get("swap") or {}
    if sw:
        t.add_row("swap v→v+1→v under c=32", f"{sw['failed_requests']} failed", "", "", _f(sw["swap_p99_ms"]),
                  f"steady p99 {_f(sw['steady_p99_ms'])} ms; swaps took {sw['swap_seconds']} s; "
                  f"answers {sw['answers_by_version']}")
    i8 = d.get("int8") or {}
    if i8:
        t.add_row("int8 dynamic quantisation", f"{_f(d['int8_speedup_bs64'], 2)}× at bs=64", "", "", "",
                  f"accuracy fp32 {_f(i8['accuracy_fp32'])} → int8 {_f(i8['accuracy_int8'])} "
                  f"({_f(d['int8_accuracy_delta_points'], 1)} points, {i8['texts']} texts)")
    tr = d.get("trainer") or {}
    if "ratio" in tr:
        t.add_row("trainer vs bare loop", f"{_f(tr['ratio'], 3)}×", "", "", "",
                  f"{_f(tr['trainer_texts_per_s'])} vs {_f(tr['bare_loop_texts_per_s'])} texts/s")
    elif tr:
        t.add_row("trainer vs bare loop", "skipped", "", "", "", tr.get("skipped", "")[:60])
    t.add_section()
    if d.get("batching_bound_bs64_vs_bs1") is not None:
        t.add_row("batching bound: ceiling bs=64 ÷ bs=1", _f(d["batching_bound_bs64_vs_bs1"], 2), "", "", "",
                  "the most any batcher can gain over one forward per request here")
    if d.get("cpu_ratio_to_ceiling_c32") is not None:
        t.add_row("CPU-time ratio c=32 vs ceiling bs=32", _f(d["cpu_ratio_to_ceiling_c32"], 2), "", "", "",
                  "ceiling CPU ms/text ÷ server CPU ms/text (insensitive to other load)")
    for name, v in d.get("targets", {}).items():
        met = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "—"}[v["met"]]
        t.add_row(f"target {name}", _f(v["value"], 2), "", "", "", f"{v['target']}: {met}")
    t.caption = f"{d['config']['texts']} texts from {Path(d['config']['csv']).name}, {d['config']['requests']} " \
                f"requests per HTTP run; {_f(d.get('duration_s'), 0)} s in all"
    return t
