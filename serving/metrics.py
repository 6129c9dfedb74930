"""Prometheus metrics of one worker, fed by session events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Counters, gauges and histograms in a registry of their own (several apps may live in one process)."""

    def __init__(self, sessions: Callable[[], int], memory_tokens: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry()
        self._seen = self._kept = 0
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, open fds
        self.frames_in = Counter("vigil_frames_received", "Frames received by sessions.", registry=r)
        self.frames_processed = Counter("vigil_frames_processed", "Frames perceived.", registry=r)
        self.frames_dropped = Counter(
            "vigil_frames_dropped", "Frames not perceived, by reason.", ["reason"], registry=r
        )
        self.tokens_seen = Counter("vigil_visual_tokens_seen", "Visual tokens before dropping.", registry=r)
        self.tokens_kept = Counter("vigil_visual_tokens_kept", "Visual tokens kept by the drop.", registry=r)
        self.drop_ratio = Gauge("vigil_drop_ratio", "Share of visual tokens dropped since start.", registry=r)
        self.drop_ratio.set_function(self._drop_ratio)
        self.sessions = Gauge("vigil_sessions", "Live sessions on this worker.", registry=r)
        self.sessions.set_function(sessions)
        self.memory_tokens = Gauge("vigil_memory_tokens", "Visual tokens held in memory, all sessions.", registry=r)
        self.memory_tokens.set_function(memory_tokens)
        self.ttft = Histogram(
            "vigil_answer_ttft_seconds", "Time to first answer token.", ["kind"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.answer_time = Histogram(
            "vigil_answer_seconds", "Time to the whole answer.", ["kind"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.lag = Histogram(
            "vigil_perception_lag_seconds",
            "Wall time from a step's last frame arriving to the step being in memory.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "vigil_prompt_tokens", "Context tokens of answers, cached ones included.", ["kind"], registry=r
        )
        self.cached_tokens = Counter(
            "vigil_cached_tokens", "Context tokens of answers reused from the cache.", ["kind"], registry=r
        )
        self.generated_tokens = Counter("vigil_generated_tokens", "Answer tokens generated.", ["kind"], registry=r)
        self.answers = Counter("vigil_answers", "Answers finished.", ["kind", "finish_reason"], registry=r)
        self.triggers = Counter("vigil_triggers", "Proactive triggers fired.", ["kind"], registry=r)
        self.errors = Counter("vigil_session_errors", "Error events of sessions.", ["code"], registry=r)
        self.rejected = Counter("vigil_requests_rejected", "Requests refused, by error code.", ["code"], registry=r)

    def _drop_ratio(self) -> float:
        return 0.0 if self._seen == 0 else 1.0 - self._kept / self._seen

    def observe(self, event: Any) -> None:
        """Account for one session event."""
        kind = event.type
        if kind == "frame_accepted":
            self.frames_processed.inc()
        elif kind == "frame_dropped":
            self.frames_dropped.labels(event.reason).inc()
        elif kind == "perception":
            self.tokens_seen.inc(event.tokens)
            self.tokens_kept.inc(event.kept)
            self._seen += event.tokens
            self._kept += event.kept
            self.lag.observe(event.lag_s)
        elif kind == "answer_done":
            self.answers.labels(event.kind, event.finish_reason).inc()
            self.prompt_tokens.labels(event.kind).inc(event.prompt_tokens + event.synced_tokens + event.cached_tokens)
            self.cached_tokens.labels(event.kind).inc(event.cached_tokens)
            self.generated_tokens.labels(event.kind).inc(event.generated_tokens)
            if event.generated_tokens:
                self.ttft.labels(event.kind).observe(event.ttft_s)
            self.answer_time.labels(event.kind).observe(event.total_s)
        elif kind == "trigger":
            self.triggers.labels(event.kind).inc()
        elif kind == "error":
            self.errors.labels(event.code).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
