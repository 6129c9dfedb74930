"""What the page shows, as plain values: banners (HTML), the numbers line (Markdown) and the plot data."""

from __future__ import annotations

import html

import pandas as pd

from demos.tab_stats import TabStats
from demos.transcript import Transcript
from demos.ui_sessions import UiSession

BANNER_STYLE = {
    "error": "background:#fde8e8;border:1px solid #f05252;color:#771d1d;",
    "warning": "background:#fdf6b2;border:1px solid #c27803;color:#723b13;",
    "info": "background:#e1effe;border:1px solid #3f83f8;color:#1e429f;",
}


def banner(kind: str, text: str, elem_id: str) -> str:
    """An HTML banner (error, warning or info) with a stable id."""
    return (
        f'<div id="{elem_id}" class="vigil-banner vigil-{kind}" role="alert" style="{BANNER_STYLE[kind]}'
        f'padding:8px 12px;border-radius:6px;margin:4px 0;font-weight:600;">{html.escape(text)}</div>'
    )


def model_banner(model_name: str | None, command: str = "vigil demo") -> str:
    """A warning when the model is the random-weight test model (its answers are noise); ``command`` is how this
    app was started (``vigil demo``, ``vigil serve --ui``), for the hint."""
    from assistant.models.tiny import is_tiny_model

    if model_name and (model_name == "tiny" or is_tiny_model(model_name)):
        return banner(
            "warning",
            "Test model: the tiny model has random weights, so its answers are random words. Start the app with a "
            f"real checkpoint ({command} --model Qwen/Qwen2.5-VL-3B-Instruct) for meaningful answers.",
            "vigil-model-banner",
        )
    return ""


def clock_html(position: float | None) -> str:
    """The played file's position for the page script that keeps the video in step (empty: nothing plays)."""
    if position is None:
        return '<span id="vigil-clock" data-playing="0"></span>'
    return f'<span id="vigil-clock" data-playing="1" data-t="{position:.3f}"></span>'


def status_banner(ui: UiSession | None, problem: str | None = None) -> str:
    """The tab's error banner: engine unavailable, engine/perception errors, or an ended session."""
    if problem:
        return banner("error", problem, "vigil-error-banner")
    if ui is None:
        return banner(
            "error", "No session: the engine is unavailable. Reload the page to try again.", "vigil-error-banner"
        )
    if ui.ended is not None and ui.ended != "restarted":
        text = f"This session ended ({ui.ended}). Press “Apply & restart” to start a new one."
        return banner("warning", text, "vigil-ended-banner")
    if ui.error:
        return banner("error", f"Error: {ui.error}", "vigil-error-banner")
    if ui.playing:
        return banner("info", f"Playing {ui.playing} as live; the camera is paused.", "vigil-playing-banner")
    return ""


def stats_markdown(stats: TabStats) -> str:
    """One line of live numbers for the panel."""
    live = stats.live
    if live is None:
        return "No session."
    dropped = live.frames_dropped
    reasons = ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none"
    latency = (
        f"first token **{live.last_ttft_s:.2f} s**, total **{live.last_total_s:.2f} s**"
        if live.last_ttft_s is not None
        else "no answer yet"
    )
    return (
        f"Stream **{live.stream_t:.1f} s** · frames processed **{live.processed_frames}**, "
        f"dropped **{sum(dropped.values())}** ({reasons}) · tokens dropped **{live.drop_ratio:.0%}** · "
        f"memory **{live.memory_tokens} / {live.memory_budget}** tokens · last answer: {latency}"
    )


def _table(rows: list[tuple], columns: dict[str, str]) -> pd.DataFrame:
    data = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
    return pd.DataFrame(
        {name: pd.Series(col, dtype=dtype) for (name, dtype), col in zip(columns.items(), data, strict=True)}
    )


def figures(ui: Transcript) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Drop ratio, memory tokens and answer latency over stream time, as plot data (numeric columns even when
    empty, so the plots get numeric axes from the start)."""
    drops = _table(list(ui.drops), {"t": "float64", "drop_ratio": "float64"})
    memory = _table(list(ui.memory), {"t": "float64", "tokens": "int64"})
    rows = [(t, s, "first token") for t, s, _ in ui.latency] + [(t, s, "total") for t, _, s in ui.latency]
    latency = _table(sorted(rows, key=lambda r: r[0]), {"t": "float64", "seconds": "float64", "metric": "string"})
    return drops, memory, latency
