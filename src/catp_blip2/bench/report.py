"""Rendering of a `catp-blip2 bench` report (the dict written to bench.json): a Markdown table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GIB = 1024**3


def _spread(row: dict[str, Any], stage: str) -> str:
    s = row["stages"][stage]
    return f"{s['median']:.3f} ({s['q1']:.3f}-{s['q3']:.3f})"


def markdown_table(report: dict[str, Any], batch_size: int) -> str:
    """One table per batch size: medians (quartiles for end to end and prefill) and ratios against stock."""
    header = (
        "| config | LM prompt tokens | end to end s (IQR) | e2e speed-up | samples/s | vision s | Q-Former + scoring s "
        "| scoring % of e2e | prefill s (IQR) | prefill speed-up | roofline s | % of roofline | FLOP ideal | % of ideal "
        "| TTFT s | decode s/token | peak mem GiB (+run) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in report["results"]:
        if row["batch_size"] != batch_size:
            continue
        stock = row["method"] == "stock"
        lines.append(
            "| {config} | {tokens} | {e2e} | {e2e_x} | {tput:.3f} | {vision:.3f} | {qf:.3f} | {score:.3f}% | {prefill} "
            "| {pre_x} | {roof} | {of_roof} | {ideal} | {of_ideal} | {ttft:.3f} | {decode:.3f} | {mem:.2f} (+{mem_run:.2f}) |".format(
                config=row["config"],
                tokens=row["lm_prompt_tokens"],
                e2e=_spread(row, "end_to_end_s"),
                e2e_x="1.00" if stock else f"{row['end_to_end_speedup_vs_stock']:.3f}",
                tput=row["throughput_samples_per_s"],
                vision=row["vision_s"],
                qf=row["qformer_scoring_s"],
                score=100 * row["scoring_overhead_fraction"],
                prefill=_spread(row, "prefill_s"),
                pre_x="1.00" if stock else f"{row['prefill_speedup_vs_stock']:.3f}",
                roof=f"{row['roofline_prefill_s']:.3f} ({row['roofline_bound']})" if "roofline_prefill_s" in row else "",
                of_roof=_fraction(row, "prefill") if "roofline_prefill_s" in row else "",
                ideal="" if stock else f"{row['flop_ideal_prefill_speedup']:.3f}",
                of_ideal="" if stock else f"{100 * row['prefill_speedup_fraction_of_ideal']:.1f}%",
                ttft=row["time_to_first_token_s"],
                decode=row["decode_per_token_s"],
                mem=row["peak_memory_bytes"] / GIB,
                mem_run=row["peak_memory_above_baseline_bytes"] / GIB,
            )
        )
    return "\n".join(lines)


def _fraction(row: dict[str, Any], stage: str) -> str:
    """A stage's % of its roofline; above 100% it is flagged as the measurement error it is, not a result."""
    text = f"{100 * row[f'{stage}_fraction_of_roofline']:.1f}%"
    return f"{text} MEASUREMENT ERROR (>100%)" if row.get(f"{stage}_measurement_error") else text


def vision_table(report: dict[str, Any], batch_size: int) -> str:
    """The vision encoder per configuration: r, tokens left, time against stock and against its roofline, with the
    prefill's roofline beside it."""
    lines = [
        "| config | r | vision tokens left | vision s (IQR) | vision speed-up | vision roofline s | % of vision roofline "
        "| prefill % of roofline | e2e speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        if row["batch_size"] != batch_size or "roofline_vision_s" not in row:
            continue
        lines.append(
            f"| {row['config']} | {row['vision_merge_per_layer']} | {row['vision_tokens_left']} | "
            f"{_spread(row, 'vision_s')} | {row['vision_speedup_vs_stock']:.3f} | {row['roofline_vision_s']:.4f} "
            f"({row['roofline_vision_bound']}) | {_fraction(row, 'vision')} | "
            f"{_fraction(row, 'prefill') if 'prefill_fraction_of_roofline' in row else ''} | "
            f"{row['end_to_end_speedup_vs_stock']:.3f} |"
        )
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """The whole bench.md text."""
    parts = [
        f"# catp-blip2 bench: {report['model']}",
        "",
        f"- device: {report['device']} ({report['device_name']}); dtype {report['dtype']} "
        f"(Q-Former {report['qformer_dtype']}); {report['parameters']:,} parameters",
        f"- prompt: {report['num_query_tokens']} image tokens (stock) or k (CATP) + T = {report['prompt_tokens']} text "
        f"tokens; {report['new_tokens']} new tokens per run (greedy, forced length)",
        f"- {report['warmup']} warm-up and {report['repeats']} timed runs per configuration and batch size, "
        "interleaved; medians, IQR in brackets",
        f"- memory: {report['memory_measure']}; (+run) = peak above the resident size at the start of the run",
        f"- 1-minute load average at start / end: {report['load_average_1min']['start']} / "
        f"{report['load_average_1min']['end']} ({report['threads']} threads; higher means other work shared the CPU)",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
    ]
    machine = report.get("machine")
    if machine:
        parts.append(
            f"- measured on this machine ({machine['method']}): matrix multiply {machine['matmul_flops_per_s'] / 1e12:.3f} "
            f"TFLOP/s, memory {machine['memory_bytes_per_s'] / 1e9:.2f} GB/s; roofline prefill (and vision) = "
            "max(FLOPs / peak, weight bytes / bandwidth); a stage above 100% of its roofline is flagged as a "
            "measurement error"
        )
    if report.get("command"):
        parts.append(f"- command: `{report['command']}`")
    sweep = report.get("sweep")
    if sweep:
        parts.append(
            f"- sweep: {sweep['configurations']} configurations x {sweep['questions']} questions about {sweep['images']} "
            f"images (batch {sweep['batch_size']}): naive {sweep['naive_s']:.2f} s, shared features "
            f"{sweep['shared_s']:.2f} s, speed-up {sweep['speedup']:.2f}; vision + Q-Former passes "
            f"{sweep['vision_passes']['naive']} vs {sweep['vision_passes']['shared']}; predictions identical: "
            f"{'yes' if sweep['identical'] else 'NO'}"
        )
    for batch_size in report["batch_sizes"]:
        parts += ["", f"## Batch size {batch_size}", "", markdown_table(report, batch_size)]
        if any("roofline_vision_s" in row for row in report["results"]):
            parts += ["", f"Vision encoder, batch size {batch_size} (r = image tokens merged per vision layer):", "",
                      vision_table(report, batch_size)]
    parts += ["", "## Targets", "", "| target | batch | value | limit | met |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        parts.append(f"| {t['target']} | {t['batch_size']} | {t['value']:.4f} | {t['limit']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(parts) + "\n"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    path.write_text(render_markdown(report))


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Left: stage times per configuration and batch size (stacked). Right: prefill speed-up vs k and the ideal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    figure, (stages_axis, speedup_axis) = plt.subplots(1, 2, figsize=(13, 5))
    stage_names = [
        ("vision_s", "vision"),
        ("qformer_scoring_s", "Q-Former + scoring"),
        ("prefill_s", "LM prefill"),
        ("decode_total_s", "LM decode"),
        ("other_s", "other"),
    ]
    labels, bottoms = [], [0.0] * len(rows)
    for row in rows:
        labels.append(f"b{row['batch_size']}\n{row['config'].replace('catp-', '')}")
    decode_runs = report["new_tokens"] - 1
    for key, name in stage_names:
        values = [
            r["decode_per_token_s"] * decode_runs if key == "decode_total_s" else max(0.0, r[key]) for r in rows
        ]
        stages_axis.bar(range(len(rows)), values, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    stages_axis.set_xticks(range(len(rows)), labels, fontsize=8)
    stages_axis.set_ylabel("seconds per generate (median)")
    stages_axis.set_title(f"{report['model']} on {report['device']} ({report['dtype']})")
    stages_axis.legend(fontsize=8)

    T = report["prompt_tokens"]
    q = report["num_query_tokens"]
    ks = sorted({r["k"] for r in rows})
    speedup_axis.plot(ks, [(q + T) / (k + T) for k in ks], "k--", label=f"FLOP ideal (32+T)/(k+T), T={T}")
    merges = sorted({r.get("vision_merge_per_layer", 0) for r in rows})
    for batch_size in report["batch_sizes"]:
        for merge in merges:
            catp = sorted((r["k"], r["prefill_speedup_vs_stock"], r["end_to_end_speedup_vs_stock"]) for r in rows
                          if r["batch_size"] == batch_size and r["method"] == "catp"
                          and r.get("vision_merge_per_layer", 0) == merge)
            if not catp:
                continue
            tag = f"batch {batch_size}" + (f", r={merge}" if merge else "")
            if merge == 0:
                speedup_axis.plot([c[0] for c in catp], [c[1] for c in catp], "o-", label=f"prefill, {tag}")
            speedup_axis.plot([c[0] for c in catp], [c[2] for c in catp], "s:", label=f"end to end, {tag}")
    speedup_axis.axhline(1.0, color="grey", linewidth=0.8)
    speedup_axis.set_xlabel("k (query tokens kept)")
    speedup_axis.set_ylabel("speed-up vs stock BLIP-2")
    speedup_axis.set_title("CATP speed-up vs stock")
    speedup_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


__all__ = ["markdown_table", "render_markdown", "write_markdown", "write_plot"]
