"""One validated configuration tree for Vigil; every field documented and bounded."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memory.token_drop import DropPolicy

# Bounds shared by the config tree and the per-session options (declared once).
MIN_FPS = 0.01
"""Slowest sampling rate (one frame in 100 s): slower would stretch the stream clock past any use."""


def _min_fps(fps: float) -> float:
    if fps < MIN_FPS:
        raise ValueError(f"fps must be at least {MIN_FPS:g} frames per second")
    return fps


Fps = Annotated[
    float, Field(gt=0, le=60, description="Frames sampled per second of stream time."), AfterValidator(_min_fps)
]
FramesPerStep = Annotated[
    int,
    Field(
        ge=1,
        le=8,
        description="Sampled frames per temporal step (at most the model's temporal patch, 2 for Qwen-VL); default "
        "the temporal patch. With 1, each frame is its own step (finer timing, twice the tokens).",
    ),
]
BudgetTokens = Annotated[int, Field(ge=16, le=1_000_000, description="Visual tokens the memory may hold.")]
MemoryPolicyName = Literal["sink_window", "redundancy", "round_pool"]
MaxNewTokens = Annotated[int, Field(ge=1, le=8192, description="Longest answer in tokens.")]
Proactive = Literal["off", "scene", "narrate"]
MAX_INSTRUCTIONS = 16
"""Standing instructions one session may hold."""
MAX_INSTRUCTION_CHARS = 1000
Instruction = Annotated[str, Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS)]


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

    fps: Fps = 1.0
    frames_per_step: FramesPerStep | None = None
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

    budget_tokens: BudgetTokens = 8192
    policy: MemoryPolicyName = Field("sink_window", description="What to do when the budget is reached.")
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


class VLLMOptions(_Config):
    """In-process vLLM engine options."""

    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one model is split over.")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take.")
    max_model_len: int | None = Field(None, ge=512, le=4_000_000, description="Context length (default: model's).")
    max_num_seqs: int = Field(64, ge=1, le=4096, description="Requests batched together at most.")
    visual_input: Literal["kept", "embeds", "frames"] = Field(
        "kept",
        description="'kept': only our perception's kept tokens, at their own positions (Vigil's vLLM plugin "
        "models, Qwen2-VL / Qwen2.5-VL); 'embeds': the kept embeddings as whole grids (stock vLLM, Qwen-VL); "
        "'frames': the kept raw frames, encoded by vLLM (any VLM vLLM supports).",
    )
    enforce_eager: bool = Field(False, description="Disable CUDA graphs (faster start, slower decode).")
    compaction_every: int = Field(
        64, ge=1, le=100_000, description="Memory changes that invalidate the prefix batched before compaction."
    )


class RemoteOptions(_Config):
    """OpenAI-compatible ``vllm serve`` replicas the remote engine talks to."""

    urls: tuple[str, ...] = Field((), max_length=256, description="Base URLs, e.g. http://gpu1:8000/v1.")
    served_model: str | None = Field(None, description="Model name the replicas serve (default: the model name).")
    api_key: str | None = Field(None, description="Bearer key for the replicas.")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Per-request timeout.")
    connect_timeout_s: float = Field(5.0, gt=0, le=600, description="Connection timeout.")
    retries: int = Field(2, ge=0, le=10, description="Retries of a request that produced no output yet.")

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"remote URL must start with http:// or https://, got {url!r}")
        return tuple(url.rstrip("/") for url in urls)


class EngineConfig(_Config):
    """The reaction engine that answers."""

    kind: Literal["hf", "vllm", "remote"] = Field("hf", description="transformers, in-process vLLM, or remote.")
    max_new_tokens: MaxNewTokens = 128
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
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    remote: RemoteOptions = Field(default_factory=RemoteOptions)

    @model_validator(mode="after")
    def _remote_has_urls(self) -> EngineConfig:
        if self.kind == "remote" and not self.remote.urls:
            raise ValueError("the remote engine needs at least one URL (engine.remote.urls / --remote-url)")
        return self


class SessionConfig(_Config):
    """How every live session runs: its frame queue and event history."""

    frame_queue: int = Field(
        32, ge=1, le=100_000, description="Frames waiting for perception; the oldest is dropped beyond this."
    )
    event_history: int = Field(10_000, ge=100, le=10_000_000, description="Events kept for clients that resume.")


class LimitsConfig(_Config):
    """What one client may send the HTTP API (beyond these: 413, 415 or 429 with Retry-After)."""

    max_body_bytes: int = Field(16 * 2**20, ge=1024, le=2**32, description="Largest request body (not video).")
    max_frame_bytes: int = Field(8 * 2**20, ge=1024, le=2**31, description="Largest encoded frame.")
    max_frame_pixels: int = Field(4096 * 4096, ge=64, le=2**28, description="Largest decoded frame area.")
    max_frames_per_request: int = Field(64, ge=1, le=10_000, description="Frames in one multipart request.")
    max_fps: float = Field(30.0, gt=0, le=1000, description="Frames per second one session may receive.")
    max_sessions_per_key: int = Field(16, ge=1, le=100_000, description="Open sessions per API key.")
    max_sessions: int = Field(256, ge=1, le=1_000_000, description="Open sessions per worker.")
    max_upload_bytes: int = Field(2 * 2**30, ge=1024, le=2**40, description="Largest uploaded video.")
    max_question_chars: int = Field(
        2000, ge=1, le=1_000_000, description="Longest question (it must also fit the engine's question allowance)."
    )
    max_queued_questions: int = Field(8, ge=1, le=10_000, description="Questions queued or running per session.")
    max_session_frame_bytes: int = Field(
        256 * 2**20, ge=2**16, le=2**40, description="Decoded bytes of the frames one session may have queued."
    )
    max_worker_frame_bytes: int = Field(
        2 * 2**30, ge=2**16, le=2**42, description="Decoded bytes of the frames all sessions of a worker may queue."
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, le=2**24, description="Largest request head (request line and headers)."
    )
    max_connections: int = Field(1000, ge=1, le=1_000_000, description="Open connections and WebSockets per worker.")
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Time a client has to send a request's head (slow requests are closed)."
    )


class ServerConfig(_Config):
    """The HTTP service: where it listens, who may call it, how workers share state."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    api_keys: tuple[str, ...] = Field((), description="Bearer keys; empty = no authentication.")
    redis_url: str | None = Field(None, description="Redis for the session directory, event streams and archive.")
    worker_id: str | None = Field(None, description="This worker's name in the session directory (default: random).")
    public_url: str | None = Field(None, description="URL other workers redirect this worker's sessions to.")
    video_allow: tuple[str, ...] = Field(
        (), description="Path or URL prefixes a client may ask the server to play (empty: none)."
    )
    idle_timeout_s: float = Field(900.0, gt=0, le=7 * 86400, description="Close API sessions idle for this long.")
    ui_idle_timeout_s: float = Field(
        120.0, gt=0, le=86400, description="Close a browser tab's session when the tab is not seen for this long."
    )
    ui: bool = Field(False, description="Mount the Gradio app at /ui.")
    redis_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Longest wait for one Redis call (then 503; /health never waits on Redis)."
    )
    heartbeat_s: float = Field(
        2.0, gt=0, le=60, description="How often a worker says it is alive; it is presumed dead after 3 missed."
    )
    metrics_open: bool = Field(False, description="Serve /metrics without an API key (for Prometheus scrapers).")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for key in keys:
            if len(key) < 8 or any(c.isspace() for c in key):
                raise ValueError("API keys need at least 8 characters and no whitespace")
        return keys


class SceneConfig(_Config):
    """The scene-change detector: a per-frame colour cue (before frames merge into steps) and the drop-ratio cue."""

    frame_threshold: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="Colour-histogram change of a frame against the previous sampled frame "
        "(share of pixels whose colour moved to another bin) at or above which it is a cut candidate.",
    )
    frame_ratio: float = Field(
        1.5,
        ge=1.0,
        le=100.0,
        description="A candidate must also be this many times the median recent change "
        "(steady fast motion raises the bar).",
    )
    baseline_frames: int = Field(8, ge=1, le=1000, description="Ordinary frames the median baseline spans.")
    cooldown_s: float = Field(1.5, ge=0.0, le=3600.0, description="Stream seconds after a trigger with no other.")
    drop_cue: bool = Field(True, description="Also fire on a step whose kept share or token change jumps.")
    drop_cue_frame_change: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description="The drop-ratio cue fires only with at least this colour change in "
        "the step (so motion that keeps many tokens is not a cut).",
    )
    sensitivity: float = Field(0.35, gt=0.0, le=1.0, description="Kept share above its baseline that is a jump.")
    min_kept: float = Field(0.5, gt=0.0, le=1.0, description="Least kept share of a drop-ratio jump.")
    change_ratio: float = Field(
        2.5, gt=1.0, le=100.0, description="Mean token change over its baseline that is a jump."
    )
    min_change: float = Field(0.1, ge=0.0, le=1.0, description="Least mean token change of a jump.")
    rearm: float = Field(0.5, gt=0.0, le=1.0, description="Share of the jump levels a step must fall below to re-arm.")
    alpha: float = Field(0.2, gt=0.0, le=1.0, description="Weight of a new ordinary step in the step baselines.")
    warmup_steps: int = Field(2, ge=0, le=1000, description="Steps before the drop-ratio cue may fire.")


class ProactiveConfig(_Config):
    """When a session speaks by itself: scene changes and the probes of standing instructions."""

    scene: SceneConfig = Field(default_factory=SceneConfig)
    probe_interval_s: float = Field(
        4.0,
        gt=0.0,
        le=3600.0,
        description="Stream seconds between the probes of a standing instruction (a "
        "probe at every multiple of it, answered on the memory up to that time).",
    )
    max_pending_probes: int = Field(
        8,
        ge=1,
        le=1000,
        description="Probes of one instruction that may wait; a live stream skips (and counts) "
        "slots beyond it, a file played losslessly waits instead.",
    )


PROMPT_DEFAULTS: dict[str, dict[str, str]] = {
    "default": {
        "probe": "Is this true right now: {instruction}?",
        "narration": "Describe in one short sentence what just changed in the video.",
        "instruction": 'The user asked: "{instruction}". It is happening now. Tell the user briefly what you see.',
    },
}
"""Prompt wording by model family (``model_type``, e.g. ``qwen2_5_vl``); a family's missing keys come from
``default``. Add a family here when its checkpoints are tuned for another phrasing."""


class PromptsConfig(_Config):
    """Wording of the session's own prompts; None takes the model family's default (``PROMPT_DEFAULTS``)."""

    probe: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="Yes/no probe of a standing instruction; '{instruction}' "
        "is replaced by its text (the engine adds the family's answer-yes-or-no suffix).",
    )
    narration: str | None = Field(None, min_length=1, max_length=2000, description="What to ask at a scene change.")
    instruction: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="What to ask when an instruction fires; '{instruction}' is replaced by its text.",
    )

    @field_validator("probe", "instruction")
    @classmethod
    def _one_placeholder(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.format(instruction="x")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"only the placeholder {{instruction}} may appear (braces as {{{{ }}}}): {exc}"
                ) from None
        return value

    def resolve(self, family: str | None) -> dict[str, str]:
        """The three prompts for a model family: the configured ones, else the family's, else the defaults."""
        merged = {**PROMPT_DEFAULTS["default"], **PROMPT_DEFAULTS.get(family or "", {})}
        for key in ("probe", "narration", "instruction"):
            if (value := getattr(self, key)) is not None:
                merged[key] = value
        return merged


class VigilConfig(_Config):
    """The whole configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    perception: PerceptionConfig = Field(default_factory=PerceptionConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    proactive: ProactiveConfig = Field(default_factory=ProactiveConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)

    @model_validator(mode="after")
    def _kv_fits_memory(self) -> VigilConfig:
        need = self.memory.budget_tokens + self.engine.text_window_tokens + 256
        if self.engine.kv_cap_tokens < need:
            raise ValueError(
                f"engine.kv_cap_tokens ({self.engine.kv_cap_tokens}) must hold the memory budget plus the text "
                f"window and a question (at least {need}); raise it or lower memory.budget_tokens"
            )
        return self


CONFIG_FILE_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
ENV_PREFIX = "VIGIL_"


def load_config(overrides: dict[str, Any] | None = None, config_file: str | None = None) -> VigilConfig:
    """The config tree from, strongest first: ``overrides`` (the command line), ``VIGIL_*`` environment variables
    (section and field joined by ``__``: ``VIGIL_ENGINE__MAX_NEW_TOKENS=64``), a YAML, TOML or JSON file, defaults.

    ValueError for a file that is missing or unreadable; pydantic's ValidationError for invalid values.
    """
    import contextlib
    import os

    from pydantic_settings import (
        BaseSettings,
        JsonConfigSettingsSource,
        SettingsConfigDict,
        TomlConfigSettingsSource,
        YamlConfigSettingsSource,
    )

    sources: dict[str, Any] = {".toml": TomlConfigSettingsSource, ".json": JsonConfigSettingsSource}
    if config_file is not None:
        suffix = os.path.splitext(config_file)[1].lower()
        if suffix not in CONFIG_FILE_SUFFIXES:
            raise ValueError(f"config file {config_file!r}: use a .yaml, .yml, .toml or .json file")
        if not os.path.isfile(config_file):
            raise ValueError(f"config file {config_file!r} not found")

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")
        model: ModelConfig = Field(default_factory=ModelConfig)
        perception: PerceptionConfig = Field(default_factory=PerceptionConfig)
        memory: MemoryConfig = Field(default_factory=MemoryConfig)
        engine: EngineConfig = Field(default_factory=EngineConfig)
        session: SessionConfig = Field(default_factory=SessionConfig)
        server: ServerConfig = Field(default_factory=ServerConfig)

        @field_validator("perception", mode="before")
        @classmethod
        def _drop_numbers(cls, value: Any) -> Any:  # environment variables arrive as text
            drop = value.get("drop") if isinstance(value, dict) else None
            if isinstance(drop, dict):
                for key in ("threshold", "drop_ratio"):
                    if isinstance(drop.get(key), str):
                        with contextlib.suppress(ValueError):  # else the drop policy names the field
                            drop[key] = float(drop[key])
            return value

        @classmethod
        def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, env_settings: Any, **_: Any) -> Any:
            if config_file is None:
                return init_settings, env_settings
            source = sources.get(os.path.splitext(config_file)[1].lower(), YamlConfigSettingsSource)
            try:
                return init_settings, env_settings, source(settings_cls, config_file)
            except Exception as exc:  # the parsers' own errors (YAML, TOML, JSON syntax)
                raise ValueError(f"config file {config_file!r} cannot be read: {exc}".splitlines()[0]) from None

    return VigilConfig.model_validate(Settings(**(overrides or {})).model_dump())


class SessionOptions(_Config):
    """What one client chooses for its session on top of the config tree (None keeps the configured value).

    The one declaration of per-session choices and their bounds: the HTTP API's session body, the browser app's
    controls, the CLI and the evaluation runner all build this.
    """

    fps: Fps | None = None
    frames_per_step: FramesPerStep | None = None
    budget_tokens: BudgetTokens | None = None
    memory_policy: MemoryPolicyName | None = Field(None, description="What to do when the budget is reached.")
    drop_mode: Literal["pixel", "feature"] | None = Field(None, description="Differential token drop mode.")
    drop_threshold: float | None = Field(
        None,
        description="feature: drop when cosine similarity > T; pixel: drop when mean |diff| < T (range checked by the "
        "drop policy of the mode).",
    )
    drop_ratio: float | None = Field(None, description="Budget mode: drop this share of each step, in [0, 1).")
    max_new_tokens: MaxNewTokens | None = None
    proactive: Proactive = Field("off", description="Report scene changes (scene) or describe them (narrate).")
    instructions: tuple[Instruction, ...] = Field(
        (),
        max_length=MAX_INSTRUCTIONS,
        description='Standing instructions, e.g. "tell me when a dog appears".',
    )

    @field_validator("instructions", mode="before")
    @classmethod
    def _strip_instructions(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(v.strip() if isinstance(v, str) else v for v in value if not isinstance(v, str) or v.strip())
        return value

    def apply(self, config: VigilConfig) -> VigilConfig:
        """``config`` with these choices applied, validated as a whole (pydantic's ValidationError otherwise).

        A new drop mode starts from that mode's defaults; a threshold replaces a configured drop ratio and vice versa.
        """
        data = config.model_dump()
        perception, memory, engine = data["perception"], data["memory"], data["engine"]
        drop = dict(perception["drop"])
        if self.drop_mode is not None and self.drop_mode != drop.get("mode"):
            drop = {"mode": self.drop_mode, "reference": drop.get("reference", "last_kept")}
        if self.drop_threshold is not None:
            drop["threshold"] = self.drop_threshold
            drop["drop_ratio"] = self.drop_ratio
        elif self.drop_ratio is not None:
            drop["drop_ratio"] = self.drop_ratio
            drop["threshold"] = None
        perception["drop"] = drop
        for section, key, value in (
            (perception, "fps", self.fps),
            (perception, "frames_per_step", self.frames_per_step),
            (memory, "budget_tokens", self.budget_tokens),
            (memory, "policy", self.memory_policy),
            (engine, "max_new_tokens", self.max_new_tokens),
        ):
            if value is not None:
                section[key] = value
        return VigilConfig.model_validate(data)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "config"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
