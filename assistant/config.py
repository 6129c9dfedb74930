"""One validated configuration tree for Vigil; every field documented and bounded."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memory.token_drop import DropPolicy


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(_Config):
    """Which vision-language checkpoint to load and where to run it."""

    name: str = Field("tiny", min_length=1, description="Hugging Face id, local directory, or 'tiny' (test model).")
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:N'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' is bfloat16 on GPU, float32 on CPU."
    )
    max_pixels: int | None = Field(
        None,
        ge=28 * 28,
        le=16384 * 16384,
        description="Largest resized frame area (default: the checkpoint's).",
    )
    min_pixels: int | None = Field(None, ge=28 * 28, description="Smallest resized frame area (default: checkpoint's).")

    @model_validator(mode="after")
    def _pixels_ordered(self) -> ModelConfig:
        if self.max_pixels is not None and self.min_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        return self


class PerceptionConfig(_Config):
    """Sampling, encoding and differential token drop of incoming frames."""

    fps: float = Field(1.0, gt=0, le=60, description="Frames sampled per second of stream time.")
    frames_per_step: int | None = Field(
        None,
        ge=1,
        le=8,
        description="Sampled frames per temporal step; default the model's temporal patch (2). With 1, each frame "
        "is its own step (finer timing, twice the tokens).",
    )
    drop: DropPolicy = Field(default_factory=DropPolicy, description="Differential token drop policy.")
    encode: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Run the vision encoder: 'auto' when feature-mode drop or the engine needs embeddings.",
    )

    @field_validator("drop", mode="before")
    @classmethod
    def _drop_from_dict(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(DropPolicy)})
        if unknown:
            raise ValueError(f"unknown drop option(s) {unknown}; allowed: mode, threshold, drop_ratio, reference")
        return DropPolicy(**value)

    @model_validator(mode="after")
    def _encoder_for_features(self) -> PerceptionConfig:
        if self.drop.mode == "feature" and self.encode == "never":
            raise ValueError("drop mode 'feature' needs the vision encoder; set encode to 'auto' or use mode 'pixel'")
        return self


DEFAULT_SYSTEM_PROMPT = (
    "You are Vigil, an assistant watching a live video. Frames arrive with their stream time in seconds. "
    "Answer briefly and only from what you saw."
)


class MemoryConfig(_Config):
    """The bounded visual memory of a session and its long-term archive."""

    budget_tokens: int = Field(8192, ge=16, le=1_000_000, description="Visual tokens the memory may hold.")
    policy: Literal["sink_window", "redundancy", "round_pool"] = Field(
        "sink_window", description="What to do when the budget is reached."
    )
    archive: Literal["none", "memory", "disk", "redis"] = Field("memory", description="Where evicted entries go.")
    archive_dir: str | None = Field(None, description="Directory of the disk archive.")
    redis_url: str | None = Field(None, description="Redis URL of the redis archive.")
    archive_max_entries: int = Field(4096, ge=1, description="Archive cap in entries (oldest dropped first).")
    recall: int = Field(0, ge=0, le=64, description="Archived entries brought back for each question.")

    @model_validator(mode="after")
    def _archive_location(self) -> MemoryConfig:
        if self.archive == "disk" and not self.archive_dir:
            raise ValueError("archive 'disk' needs archive_dir")
        if self.archive == "redis" and not self.redis_url:
            raise ValueError("archive 'redis' needs redis_url")
        if self.recall and self.archive == "none":
            raise ValueError("recall needs an archive; set archive to memory, disk or redis")
        return self


class EngineConfig(_Config):
    """The reaction engine that answers."""

    kind: Literal["hf", "vllm", "remote"] = Field("hf", description="transformers, in-process vLLM, or remote.")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Longest answer in tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy.")
    kv_cap_tokens: int = Field(16384, ge=256, le=4_000_000, description="Hard cap of a session's KV cache.")
    text_window_tokens: int = Field(512, ge=0, le=65536, description="Past questions and answers kept in context.")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, min_length=1, max_length=8000)
    reuse_kv: bool = Field(True, description="False re-prefills the whole context per question (baseline).")
    position_limit: int | None = Field(
        None,
        ge=4096,
        description="Consolidate positions before they reach this (default 90% of the model's).",
    )


class VigilConfig(_Config):
    """The whole configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    perception: PerceptionConfig = Field(default_factory=PerceptionConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @model_validator(mode="after")
    def _kv_fits_memory(self) -> VigilConfig:
        need = self.memory.budget_tokens + self.engine.text_window_tokens + 256
        if self.engine.kv_cap_tokens < need:
            raise ValueError(
                f"engine.kv_cap_tokens ({self.engine.kv_cap_tokens}) must hold the memory budget plus the text "
                f"window and a question (at least {need}); raise it or lower memory.budget_tokens"
            )
        return self


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "config"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
