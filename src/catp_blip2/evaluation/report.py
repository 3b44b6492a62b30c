"""Reports of `catp-blip2 eval` results: the Markdown table (methods x k, then the per-sample-k rows), the
accuracy-vs-k plot and the Pareto plot (accuracy against the mean number of query tokens kept).

All read the `results.json` structure written by `catp_blip2.evaluation.runner` (the unpruned entry has method "none").
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .sweep import UNPRUNED, merge_label_item


def _split(results: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str], list[int], dict[tuple[str, int], float]]:
    """(unpruned entry, method labels in order, k values descending, {(method, k): accuracy})."""
    unpruned = None
    methods: list[str] = []
    ks: set[int] = set()
    cells: dict[tuple[str, int], float] = {}
    for entry in results["results"]:
        if entry["method"] == UNPRUNED:
            unpruned = entry
            continue
        if entry["num_kept_query_tokens"] is None:  # per-sample k: see _adaptive
            continue
        if entry["method"] not in methods:
            methods.append(entry["method"])
        ks.add(entry["num_kept_query_tokens"])
        cells[entry["method"], entry["num_kept_query_tokens"]] = entry["accuracy"]
    return unpruned, methods, sorted(ks, reverse=True), cells


def _adaptive(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries whose k was chosen per sample (`keep_score_mass`), in order."""
    return [e for e in results["results"] if e["method"] != UNPRUNED and e["num_kept_query_tokens"] is None]


def _mean_kept(entry: dict[str, Any]) -> float:
    """Mean query tokens kept per question; k for entries written before it was recorded."""
    mean = entry.get("mean_kept_query_tokens")
    return float(entry["num_kept_query_tokens"] if mean is None else mean)


def _dataset_text(dataset: Any) -> str:
    """The dataset's id and sample; its format's title first where it is not VQAv2 (the default)."""
    if isinstance(dataset, dict):
        text = str(dataset.get("id"))
        if dataset.get("format") not in (None, "vqav2"):
            text = f"{dataset.get('title') or dataset['format']} {text}"
        details = [f"{key} {dataset[key]}" for key in ("split", "fraction", "seed", "limit") if dataset.get(key) is not None]
        return f"{text} ({', '.join(details)})" if details else text
    return str(dataset)


def metric_label(results: dict[str, Any]) -> str:
    """The metric's name in tables and plots ("VQA accuracy" for results written before metrics were named)."""
    return str(results.get("metric_label") or "VQA accuracy")


def markdown_table(results: dict[str, Any]) -> str:
    """The metric (%) per method (rows) and k (columns), the unpruned model's in every column of its own row."""
    unpruned, methods, ks, cells = _split(results)
    total = unpruned["num_kept_query_tokens"] if unpruned else None
    lines = [
        f"{metric_label(results)} (%) of `{results.get('model')}` on {_dataset_text(results.get('dataset'))}, "
        f"{results.get('num_questions')} questions; k = query tokens kept"
        + (f" of {total}." if total else "."),
        "",
        "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|" + "---:|" * len(ks),
    ]
    if unpruned is not None:
        lines.append(f"| none (unpruned, all {total}) | " + " | ".join(f"{unpruned['accuracy']:.2f}" for _ in ks) + " |")
    for method in methods:
        values = [f"{cells[method, k]:.2f}" if (method, k) in cells else "-" for k in ks]
        lines.append(f"| {method} | " + " | ".join(values) + " |")
    adaptive = _adaptive(results)
    if adaptive:
        lines += ["", "Per-sample k (`keep_score_mass`): each question keeps its own number of query tokens.", "",
                  "| method | mean k | accuracy |", "|---|---:|---:|"]
        lines += [f"| {e['method']} | {_mean_kept(e):.2f} | {e['accuracy']:.2f} |" for e in adaptive]
    return "\n".join(lines) + "\n"


def _merge_r(entry: dict[str, Any]) -> int:
    """An entry's `vision_merge_per_layer` (0 for entries written before it existed)."""
    return int(entry.get("pruning_settings", {}).get("vision_merge_per_layer", 0) or 0)


def merge_values(results: dict[str, Any]) -> list[int]:
    """The vision-merging r values the results hold, ascending."""
    return sorted({_merge_r(e) for e in results["results"]})


def _by_r(results: dict[str, Any]) -> tuple[list[int], list[tuple[str, int | None]], dict[tuple[str, int | None, int], float]]:
    """(r values, (item, k) rows in order, {(item, k, r): accuracy}); per-sample-k entries have k None."""
    rs = merge_values(results)
    rows: list[tuple[str, int | None]] = []
    cells: dict[tuple[str, int | None, int], float] = {}
    for entry in results["results"]:
        row = (merge_label_item(entry["method"]), entry["num_kept_query_tokens"])
        if row not in rows:
            rows.append(row)
        cells[(*row, _merge_r(entry))] = entry["accuracy"]
    return rs, rows, cells


def markdown_table_vs_r(results: dict[str, Any]) -> str:
    """The metric (%) per (method, k) row and vision-merging r column, with the ViT tokens left where recorded."""
    rs, rows, cells = _by_r(results)
    lines = [
        f"{metric_label(results)} (%) against r = image tokens merged in each vision layer (`vision_merge_per_layer`, "
        "ToMe); r = 0 is the stock vision encoder.",
        "",
        "| method | k | " + " | ".join(f"r={r}" for r in rs) + " |",
        "|---|---:|" + "---:|" * len(rs),
    ]
    for item, k in rows:
        values = [f"{cells[item, k, r]:.2f}" if (item, k, r) in cells else "-" for r in rs]
        k_text = "per sample" if k is None else str(k)
        lines.append(f"| {'none (unpruned)' if item == UNPRUNED else item} | {k_text} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], path: str | Path) -> str:
    text = markdown_table(results)
    if len(merge_values(results)) > 1:
        text += "\n" + markdown_table_vs_r(results)
    Path(path).write_text(text, encoding="utf-8")
    return text


@contextmanager
def _figure(path: str | Path, legend_size: int = 7) -> Iterator[Any]:
    """The axes of one 7 x 4.5 in plot, which is gridded, given its legend and written to `path` as a PNG on exit."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI backend picked up from the environment
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    try:
        yield axes
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=legend_size, loc="best")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)


def plot_accuracy_vs_k(results: dict[str, Any], path: str | Path) -> None:
    """PNG: accuracy against k (log2 axis), one line per method, the unpruned accuracy as a dashed horizontal line."""
    unpruned, methods, ks, cells = _split(results)
    with _figure(path, legend_size=8) as axes:
        for method in methods:
            points = sorted((k, cells[method, k]) for k in ks if (method, k) in cells)
            axes.plot([k for k, _ in points], [a for _, a in points], marker="o", label=method)
        if unpruned is not None:
            axes.axhline(unpruned["accuracy"], color="black", linestyle="--", linewidth=1, label="unpruned")
        axes.set_xscale("log", base=2)
        if ks:
            axes.set_xticks(sorted(ks))
            axes.set_xticklabels([str(k) for k in sorted(ks)])
        axes.set_xlabel("query tokens kept (k)")
        axes.set_ylabel(f"{metric_label(results)} (%)")
        dataset = results.get("dataset")
        title = dataset.get("title") if isinstance(dataset, dict) else None
        where = f"{title}, " if title else ""
        axes.set_title(f"{results.get('model')}: accuracy vs k ({where}{results.get('num_questions')} questions)", fontsize=10)


def plot_accuracy_vs_r(results: dict[str, Any], path: str | Path) -> None:
    """PNG: accuracy against the vision-merging r, one line per (method, k), the unpruned model's solid black."""
    rs, rows, cells = _by_r(results)
    with _figure(path) as axes:
        # Colour by method, line style by k, so a dozen lines stay tellable apart.
        items = list(dict.fromkeys(item for item, _ in rows if item != UNPRUNED))
        ks = list(dict.fromkeys(k for item, k in rows if item != UNPRUNED))
        from matplotlib import colormaps

        colours = colormaps["tab10"]
        for item, k in rows:
            points = [(r, cells[item, k, r]) for r in rs if (item, k, r) in cells]
            style = {"color": "black", "linewidth": 2} if item == UNPRUNED else {
                "color": colours(items.index(item) % 10), "linestyle": ("-", "--", ":", "-.")[ks.index(k) % 4]}
            label = "unpruned" if item == UNPRUNED else f"{item}, k={'per sample' if k is None else k}"
            axes.plot([r for r, _ in points], [a for _, a in points], marker="o", label=label, **style)
        axes.set_xticks(rs)
        axes.set_xlabel("image tokens merged per vision layer (r)")
        axes.set_ylabel(f"{metric_label(results)} (%)")
        axes.set_title(f"{results.get('model')}: accuracy vs r ({results.get('num_questions')} questions)", fontsize=10)


def pareto_points(results: dict[str, Any]) -> list[tuple[float, float]]:
    """The (mean kept tokens, accuracy) points no other entry beats on both (fewer or as few tokens, as good or
    better accuracy), by increasing tokens."""
    points = sorted(((_mean_kept(e), e["accuracy"]) for e in results["results"]), key=lambda p: (p[0], -p[1]))
    front: list[tuple[float, float]] = []
    for tokens, accuracy in points:
        if not front or accuracy > front[-1][1]:
            front.append((tokens, accuracy))
    return front


def plot_pareto(results: dict[str, Any], path: str | Path) -> None:
    """PNG: accuracy against the mean number of query tokens kept; fixed-k methods as lines, per-sample-k entries as
    stars, the unpruned model as a square, and the Pareto front (the best accuracy for a token budget) in grey."""
    unpruned, methods, _, _ = _split(results)
    with _figure(path) as axes:
        front = pareto_points(results)
        axes.step([t for t, _ in front], [a for _, a in front], where="post", color="grey", linewidth=3, alpha=0.35,
                  label="Pareto front")
        fixed = [e for e in results["results"] if e["method"] != UNPRUNED and e["num_kept_query_tokens"] is not None]
        for method in methods:
            points = sorted((_mean_kept(e), e["accuracy"]) for e in fixed if e["method"] == method)
            axes.plot([t for t, _ in points], [a for _, a in points], marker="o", label=method)
        for entry in _adaptive(results):
            axes.plot([_mean_kept(entry)], [entry["accuracy"]], marker="*", markersize=13, linestyle="none",
                      label=f"{entry['method']} (per-sample k)")
        if unpruned is not None:
            axes.plot([_mean_kept(unpruned)], [unpruned["accuracy"]], marker="s", color="black", linestyle="none",
                      label="unpruned")
        axes.set_xscale("log", base=2)
        from matplotlib.ticker import ScalarFormatter

        axes.xaxis.set_major_formatter(ScalarFormatter())  # 4, 8, 16 rather than 2^2, 2^3, 2^4
        axes.set_xlabel("query tokens kept, mean per question")
        axes.set_ylabel(f"{metric_label(results)} (%)")
        axes.set_title(f"{results.get('model')}: accuracy vs tokens kept ({results.get('num_questions')} questions)",
                       fontsize=10)


__all__ = ["markdown_table", "metric_label", "pareto_points", "plot_accuracy_vs_k", "plot_pareto", "write_markdown"]
