"""The Run dialog's choices as the body of POST /api/suites/{id}/runs, and run labels for pickers."""

from __future__ import annotations

MAX_DEPLOYMENTS = 8
MAX_PARAMETER_SETS = 8
EXPORT_FORMATS = {"csv": "CSV (*.csv)", "jsonl": "JSON Lines (*.jsonl)", "md": "Markdown (*.md)"}


def _number(text: str, name: str, where: str, kind, lo: float, hi: float):
    text = text.strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{where}: {name} {text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{where}: {name} must be between {lo:g} and {hi:g}")
    return value


def parameter_set(index: int, label: str, temperature: str, max_tokens: str, seed: str, top_p: str) -> dict:
    """One parameter set from its row of text cells (empty: the runtime's default).

    Raises:
        ValueError: a cell that is not a number in range, naming the row and the field.
    """
    where = f"parameter set {index}"
    return {"label": label.strip() or f"set-{index}",
            "temperature": _number(temperature, "temperature", where, float, 0.0, 2.0),
            "max_tokens": _number(max_tokens, "max tokens", where, int, 1, 1 << 20),
            "seed": _number(seed, "seed", where, int, -(1 << 63), (1 << 63) - 1),
            "top_p": _number(top_p, "top p", where, float, 0.0, 1.0)}


def run_body(deployments: list[str], parameter_sets: list[dict], repetitions: int, concurrency: int) -> dict:
    """The body of POST /api/suites/{id}/runs.

    Raises:
        ValueError: no deployment or too many, no parameter set or too many, or two sets with one label.
    """
    if not deployments:
        raise ValueError("Pick at least one ready deployment to run the suite on.")
    if len(deployments) > MAX_DEPLOYMENTS:
        raise ValueError(f"Pick at most {MAX_DEPLOYMENTS} deployments ({len(deployments)} are ticked).")
    if not parameter_sets or len(parameter_sets) > MAX_PARAMETER_SETS:
        raise ValueError(f"Give between 1 and {MAX_PARAMETER_SETS} parameter sets.")
    labels = [p["label"] for p in parameter_sets]
    if len(set(labels)) != len(labels):
        raise ValueError("Two parameter sets have the same label; give each its own.")
    return {"deployments": deployments, "parameter_sets": parameter_sets, "repetitions": repetitions,
            "concurrency": concurrency}


def run_label(run: dict) -> str:
    """'2026-12-02 09:51 · completed · 400/400' for a RunSummary in a picker."""
    when = (run.get("created_at") or "")[:16].replace("T", " ")
    errors = f" · {run['errors']} errors" if run.get("errors") else ""
    return f"{when} · {run.get('status', '?')} · {run.get('done', 0)}/{run.get('total', 0)}{errors}"


def export_format(filename: str, selected_filter: str = "") -> str:
    """The export format for a file name (by extension, else by the dialog's chosen filter; csv by default)."""
    lower = filename.lower()
    for fmt in EXPORT_FORMATS:
        if lower.endswith("." + fmt):
            return fmt
    for fmt, flt in EXPORT_FORMATS.items():
        if flt == selected_filter:
            return fmt
    return "csv"
