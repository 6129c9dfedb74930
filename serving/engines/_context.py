"""The session context shared by the vLLM and remote engines: an append-only list of segments.

Both engines hand the whole context to a server with automatic prefix caching on every request, so the
context is laid out to keep its prefix stable:

    [system header] [<t s> <vision_start> item <vision_end>] ... [history "[t s] Q: .. A: .."] ...
    + per request: [recalled entries] ["[t s] question" + assistant header]

Each visual segment is one multimodal item with a stable uuid, so the server reuses the KV of everything
before the first change. New entries are appended. A change that removes something from the middle (an
eviction, a pooled pair, an old dialogue turn) invalidates the cache after that point, so such removals are
batched: removed segments stay in the prompt (marked stale) until ``compaction_every`` of them accumulate or
the context reaches its token cap, and are then dropped together (one compaction). Nothing is evicted here on
its own: the memory's context budget keeps the entries within the cap, and entries that still do not fit are
rejected with an ``EngineError``. Texts and special tokens come from the adapter's ``PromptLayout``.

Visual items come in three forms (``visual_input``):

- ``kept``: the entry's kept tokens only, [K, D] embeddings (Qwen3-VL: [K, D * (1 + L)] with the DeepStack
  levels) with their (t, h, w) offsets in the item, for the kept-token models of ``serving.engines.vllm_kept``
  (the same positions as the transformers engine). A Prune leaves the item's tokens until the next compaction,
  which rebuilds the item (new uuid) like a removal.
- ``embeds``: the entry's whole token grid with its grid (t=1, h, w), which gives stock vLLM's M-RoPE the exact
  (h, w) positions; tokens the differential drop removed are filled with the latest kept value at the same
  position (the drop's own premise: they did not change). A Prune leaves the item as it is.
- ``frames``: the entry's kept frames, encoded by the server's own vision tower.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from assistant.config import EngineConfig
from assistant.models.base import VisionLanguageAdapter
from assistant.reaction import (
    AddEntry,
    AnswerRequest,
    EngineError,
    EngineSessionStats,
    MemoryChange,
    UnknownSessionError,
)
from memory.store import Evict, MemoryEntry, Pool, Prune
from serving.engines.vllm_plugin import hf_overrides

__all__ = [
    "Segment",
    "SegmentContext",
    "SessionState",
    "VisualInput",
    "VisualItem",
    "split_frames",
]

VisualInput = Literal["kept", "embeds", "frames"]


@dataclass(slots=True)
class VisualItem:
    """One multimodal item of the prompt (a memory entry, whole)."""

    uuid: str
    """Stable id: the server hashes the item by it for prefix caching."""
    entry_id: int
    embeds: torch.Tensor | None = None  # [gh * gw, D] row-major over the token grid; kept: [K, D]
    grid: tuple[int, int] | None = None  # (gh, gw) language-model tokens
    frames: torch.Tensor | None = None  # [T, H, W, 3] uint8
    offsets: torch.Tensor | None = None  # kept: [K, 3] long (t, h, w) offset of each token in the item

    def select(self, keep: torch.Tensor, uuid: str) -> VisualItem:
        """A kept item restricted to ``keep`` ([K'] long local indices), under a new uuid."""
        assert self.embeds is not None and self.offsets is not None
        return VisualItem(uuid, self.entry_id, self.embeds[keep], self.grid, None, self.offsets[keep])


@dataclass(slots=True)
class Segment:
    """A piece of the context: the system header, one visual item with its timestamp, or a dialogue turn."""

    sid: str
    kind: Literal["system", "visual", "text"]
    text: str
    """The text itself (system, text) or the timestamp before the item (visual)."""
    ids: list[int]
    """Token ids of ``text``."""
    num_tokens: int
    """Tokens the segment takes in the server's context (text + placeholders)."""
    item: VisualItem | None = None
    stale: bool = False
    """Removed from the memory; stays in the prompt until the next compaction."""
    sent: bool = False
    """Has been part of a request (its KV may be cached); unsent segments are removed outright."""
    pruned: VisualItem | None = None
    """Kept items: the item after the Prunes not yet applied (at the next compaction)."""
    version: int = 0
    """Kept items: Prunes applied so far (part of the uuid, so a changed item is hashed afresh)."""


@dataclass(slots=True)
class SessionState:
    """Engine-side state of one session."""

    session_id: str
    nonce: str
    segments: list[Segment] = field(default_factory=list)
    history: deque[str] = field(default_factory=deque)
    pending: list[MemoryChange] = field(default_factory=list)
    pending_lock: threading.Lock = field(default_factory=threading.Lock)
    request_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    canvas: torch.Tensor | None = None  # [gh, gw, D] latest kept embedding at each grid position
    grid: tuple[int, int] = (0, 0)  # kept: the largest token grid seen (the items' image_grid_thw)
    frames_by_entry: dict[int, torch.Tensor] = field(default_factory=dict)  # entry id -> [T, H, W, 3] uint8
    stale_count: int = 0
    compactions: int = 0
    prefilled_tokens: int = 0
    next_text_id: int = 0
    requests: int = 0
    warm_signature: tuple[str, ...] = ()
    """Segment ids of the context the server last prefilled (``sync``)."""

    @property
    def context_tokens(self) -> int:
        return sum(s.num_tokens for s in self.segments)

    def signature(self) -> tuple[str, ...]:
        return tuple(s.sid for s in self.segments)


class SegmentContext:
    """Builds and maintains the segment lists of sessions for an engine that prompts a prefix-caching server."""

    def __init__(self, adapter: VisionLanguageAdapter, config: EngineConfig, visual_input: VisualInput) -> None:
        if visual_input not in ("kept", "embeds", "frames"):
            raise ValueError(f"visual_input must be 'kept', 'embeds' or 'frames', got {visual_input!r}")
        if visual_input == "kept":
            hf_overrides(adapter.family)  # a clear error for a family without a kept-token model
        if visual_input == "embeds" and getattr(adapter, "deepstack_levels", 0):
            raise ValueError(
                f"visual_input 'embeds' cannot carry {adapter.family}'s DeepStack features (stock vLLM takes "
                "embeddings of the model width only); use visual_input 'kept'"
            )
        self.adapter = adapter
        self.config = config
        self.visual_input = visual_input
        self.layout = adapter.layout
        self.sessions: dict[str, SessionState] = {}
        self.tokens_per_frame: int | None = None
        """Placeholder tokens one frame takes on the server (frames mode; learned from the first request)."""
        self.compaction_every = config.vllm.compaction_every
        self.header_ids = self.layout.header_ids(config.system_prompt)

    # -- sessions ------------------------------------------------------------------------------------------
    def open(self, session_id: str) -> SessionState:
        if session_id in self.sessions:
            raise ValueError(f"session {session_id!r} is already open in the engine")
        state = SessionState(session_id, uuid.uuid4().hex[:12])
        self.sessions[session_id] = state
        header = self.layout.header_text(self.config.system_prompt)
        ids = list(self.header_ids)
        state.segments.append(Segment("system", "system", header, ids, len(ids)))
        return state

    def get(self, session_id: str) -> SessionState:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSessionError(f"no session {session_id!r} in the engine") from None

    def queue(self, session_id: str, changes: Sequence[MemoryChange]) -> None:
        state = self.get(session_id)
        with state.pending_lock:
            state.pending.extend(changes)

    def stats(self, state: SessionState, bytes_per_token: int) -> EngineSessionStats:
        tokens = state.context_tokens
        return EngineSessionStats(
            kv_tokens=tokens,
            kv_bytes=tokens * bytes_per_token,
            kv_cap=self.config.kv_cap_tokens,
            segments=len(state.segments),
            pending_changes=len(state.pending),
            consolidations=state.compactions,
            engine_evictions=0,
            prefilled_tokens=state.prefilled_tokens,
        )

    # -- token helpers -------------------------------------------------------------------------------------
    def question_text(self, request: AnswerRequest) -> str:
        """The question as it follows the context (the chat template closes the turn after it)."""
        return self.layout.question_text(request.t, request.question)

    def question_ids(self, request: AnswerRequest) -> list[int]:
        """The question suffix with the assistant header, as the transformers engine lays it out."""
        return self.layout.question_ids(request.t, request.question)

    def item_tokens(self, item: VisualItem) -> int:
        """Placeholder tokens of an item on the server."""
        if item.embeds is not None:
            return int(item.embeds.shape[0])
        frames = item.frames
        assert frames is not None
        if self.tokens_per_frame is not None:
            return self.tokens_per_frame * int(frames.shape[0])
        px = self.adapter.geometry.token_px
        return int(frames.shape[0]) * max(1, (frames.shape[1] // px) * (frames.shape[2] // px))

    # -- memory changes ------------------------------------------------------------------------------------
    def visual_segment(self, state: SessionState, entry: MemoryEntry, *, temporary: bool = False) -> Segment:
        """The segment of a memory entry (``temporary``: a recalled entry, not folded into the canvas)."""
        tag = f"{state.nonce}-e{entry.entry_id}" + ("-recalled" if temporary else "")
        item = VisualItem(f"vigil-{state.session_id}-{tag}", entry.entry_id)
        if self.visual_input == "kept":
            item.embeds, item.offsets, item.grid = self._kept_tokens(state, entry)
        elif self.visual_input == "embeds":
            item.embeds, item.grid = self._whole_grid(state, entry, temporary)
        else:
            item.frames = self._frames_of(state, entry)
        text = self.layout.stamp_text(entry.t_start)
        ids = self.layout.ids(text)
        return Segment(f"e{entry.entry_id}", "visual", text, ids, self.visual_tokens(ids, item), item)

    def visual_tokens(self, ids: list[int], item: VisualItem) -> int:
        """Tokens a visual segment takes on the server: timestamp, framing tokens, expanded images."""
        framing = self.layout.image_framing * len(split_frames(item))
        return len(ids) + framing + self.item_tokens(item)

    def entry_overhead(self) -> Callable[[MemoryEntry], int]:
        """Context tokens an entry takes beyond its kept tokens (one function per session memory): timestamp,
        framing, and the whole grid (embeds) or the frames' tokens (frames) in place of the kept tokens."""
        grid = [0, 0]  # the largest token grid this memory has seen (the session's canvas grows the same way)
        frames_shape = [1, 0, 0]  # (T, H, W) of the last frames seen: a pooled entry is sent with its sources'
        px = self.adapter.geometry.token_px

        def overhead(entry: MemoryEntry) -> int:
            stamp = len(self.layout.stamp_ids(entry.t_start))
            if self.visual_input == "kept":
                return stamp + self.layout.image_framing
            if self.visual_input == "embeds":
                if entry.num_tokens:
                    grid[0] = max(grid[0], int(entry.positions[1].max()) + 1)
                    grid[1] = max(grid[1], int(entry.positions[2].max()) + 1)
                return stamp + self.layout.image_framing + grid[0] * grid[1] - entry.num_tokens
            frames = getattr(entry, "frames", None)
            if frames is not None:  # [T, H, W, 3] or [H, W, 3]
                frames_shape[:] = [int(frames.shape[0]) if frames.ndim == 4 else 1, *map(int, frames.shape[-3:-1])]
            t, h, w = frames_shape
            per_frame = self.tokens_per_frame or max(1, (h // px) * (w // px))
            return stamp + t * (self.layout.image_framing + per_frame) - entry.num_tokens

        return overhead

    @staticmethod
    def _embeddings(entry: MemoryEntry, mode: str) -> torch.Tensor:
        """The entry's kept embeddings [K, D] on the CPU (clear errors when there are none)."""
        if entry.embeddings is None:
            raise EngineError(
                f"visual_input {mode!r} needs visual embeddings: perception must run the encoder "
                "(or use visual_input 'frames')"
            )
        if entry.num_tokens == 0:
            raise EngineError(f"memory entry {entry.entry_id} holds no tokens")
        return entry.embeddings.detach().to("cpu")

    def _kept_tokens(
        self, state: SessionState, entry: MemoryEntry
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """The entry's kept embeddings [K, D], their (t, h, w) offsets [K, 3] and the session's token grid.

        Offsets are those the transformers engine gives: every token at the item's temporal position, its grid
        row and column added to the spatial ones (the text after the item follows its largest offset)."""
        emb = self._embeddings(entry, "kept")  # [K, D]
        rows, cols = entry.positions[1].cpu(), entry.positions[2].cpu()  # [K] grid row / col of each kept token
        offsets = torch.stack([torch.zeros_like(rows), rows, cols], dim=1)  # [K, 3]
        state.grid = (max(state.grid[0], int(rows.max()) + 1), max(state.grid[1], int(cols.max()) + 1))
        return emb.clone(), offsets, state.grid

    def _whole_grid(
        self, state: SessionState, entry: MemoryEntry, temporary: bool
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """The entry's whole token grid [gh * gw, D]: kept tokens, others from the latest value at their place."""
        emb = self._embeddings(entry, "embeds")  # [K, D]
        rows, cols = entry.positions[1].cpu(), entry.positions[2].cpu()  # [K] grid row / col of each kept token
        gh, gw = int(rows.max()) + 1, int(cols.max()) + 1
        canvas = state.canvas
        if canvas is None or canvas.shape[2] != emb.shape[1]:
            canvas = torch.zeros(gh, gw, emb.shape[1], dtype=emb.dtype)
        elif canvas.shape[0] < gh or canvas.shape[1] < gw:
            grown = torch.zeros(max(gh, canvas.shape[0]), max(gw, canvas.shape[1]), emb.shape[1], dtype=emb.dtype)
            grown[: canvas.shape[0], : canvas.shape[1]] = canvas
            canvas = grown
        gh, gw = canvas.shape[0], canvas.shape[1]
        grid = canvas.clone()  # [gh, gw, D]
        grid[rows, cols] = emb.to(grid.dtype)
        if not temporary:
            state.canvas = grid
        return grid.reshape(gh * gw, -1).clone(), (gh, gw)

    def _frames_of(self, state: SessionState, entry: MemoryEntry) -> torch.Tensor:
        frames = getattr(entry, "frames", None)
        if frames is None and entry.pooled_from:
            frames = next((state.frames_by_entry[i] for i in entry.pooled_from if i in state.frames_by_entry), None)
        if frames is None:
            raise EngineError(
                f"visual_input 'frames' needs the kept frames of memory entry {entry.entry_id}; "
                "perception did not keep them (or use visual_input 'embeds')"
            )
        frames = torch.as_tensor(frames)
        if frames.ndim == 3:
            frames = frames.unsqueeze(0)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise EngineError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        state.frames_by_entry[entry.entry_id] = frames
        return frames

    def absorb(self, state: SessionState) -> int:
        """Apply queued memory changes to the segment list; returns placeholder + text tokens added."""
        with state.pending_lock:
            changes, state.pending = state.pending, []
        added = 0
        added_sids: list[str] = []
        for change in changes:
            if isinstance(change, AddEntry):
                if change.entry.num_tokens:
                    added += self._append(state, self.visual_segment(state, change.entry))
                    added_sids.append(f"e{change.entry.entry_id}")
            elif isinstance(change, Evict):
                self._remove(state, [f"e{i}" for i in change.entry_ids])
                for i in change.entry_ids:
                    state.frames_by_entry.pop(i, None)
            elif isinstance(change, Prune):
                if self.visual_input == "kept":
                    self._prune(state, change)
                # whole grids and frames: the item stays as it is
            elif isinstance(change, Pool):
                self._remove(state, [f"e{i}" for i in change.source_ids])
                if change.entry.num_tokens:
                    added += self._append(state, self.visual_segment(state, change.entry))
                    added_sids.append(f"e{change.entry.entry_id}")
                for i in change.source_ids:
                    state.frames_by_entry.pop(i, None)
            else:
                raise EngineError(f"unknown memory change {type(change).__name__}")
        # stale segments go before anything is refused: the cap here is the one _reject_overflow holds to
        self.maybe_compact(state, reserve=self._window_left(state))
        self._reject_overflow(state, added_sids)
        return added

    def _reject_overflow(self, state: SessionState, added_sids: list[str]) -> None:
        """Take back the newest entries of this batch while the context overflows the cap; raise naming them."""
        window_left = self._window_left(state)
        cap = self.config.kv_cap_tokens - window_left
        rejected: list[str] = []
        while state.context_tokens > cap and added_sids:
            sid = added_sids.pop()
            seg = next((s for s in state.segments if s.sid == sid and not s.sent), None)
            if seg is not None:
                state.segments.remove(seg)
                if seg.item is not None:
                    state.frames_by_entry.pop(seg.item.entry_id, None)
                rejected.append(f"{sid} ({seg.num_tokens} tokens)")
        if rejected:
            raise EngineError(
                f"memory entries {', '.join(reversed(rejected))} do not fit the KV cap of {self.config.kv_cap_tokens} "
                f"tokens ({state.context_tokens} held, {window_left} kept for the text window); the engine does not "
                "evict on its own: build the memory with the engine's context_budget()"
            )

    def _window_left(self, state: SessionState) -> int:
        """Tokens the text window may still take (kept free for it under the cap)."""
        return max(0, self.config.text_window_tokens - self._history_tokens(state))

    def _history_tokens(self, state: SessionState) -> int:
        by_sid = {s.sid: s for s in state.segments}
        return sum(by_sid[s].num_tokens for s in state.history if s in by_sid)

    def _append(self, state: SessionState, segment: Segment) -> int:
        present = next((s for s in state.segments if s.sid == segment.sid), None)
        if present is not None:  # the same entry again (e.g. re-added after a reset): replace it
            self._remove(state, [segment.sid])
        state.segments.append(segment)
        return segment.num_tokens

    def _remove(self, state: SessionState, sids: Sequence[str]) -> None:
        """Remove segments: unsent ones at once, sent ones marked stale (dropped at the next compaction)."""
        wanted = set(sids)
        kept = []
        for seg in state.segments:
            if seg.sid in wanted and not seg.stale:
                if not seg.sent:
                    continue
                seg.stale = True
                state.stale_count += 1
            kept.append(seg)
        state.segments = kept

    def _prune(self, state: SessionState, change: Prune) -> None:
        """Kept items: an unsent item is cut at once; a sent one at the next compaction (counted as stale)."""
        seg = next((s for s in state.segments if s.sid == f"e{change.entry_id}" and not s.stale), None)
        if seg is None or seg.item is None:
            return
        base = seg.pruned or seg.item
        keep = change.keep.to(torch.long).cpu()
        if not seg.sent:
            seg.item = base.select(keep, base.uuid)
            seg.num_tokens = self.visual_tokens(seg.ids, seg.item)
            return
        if seg.pruned is None:
            state.stale_count += 1
        seg.pruned = base.select(keep, base.uuid)

    def maybe_compact(self, state: SessionState, reserve: int = 0) -> None:
        """Drop stale segments when enough accumulated or the cap (less ``reserve``) needs room; evicts nothing."""
        cap = self.config.kv_cap_tokens - reserve
        if state.stale_count and (state.stale_count >= self.compaction_every or state.context_tokens > cap):
            self.compact(state)

    def compact(self, state: SessionState) -> None:
        """Drop every stale segment at once (the server's cache after the first one is invalidated once)."""
        if not state.stale_count:
            return
        state.segments = [s for s in state.segments if not s.stale]
        for seg in state.segments:
            if seg.pruned is not None:  # the pruned item replaces the old one in place, hashed afresh
                base = seg.item.uuid if not seg.version else seg.item.uuid.rsplit("-v", 1)[0]
                seg.version += 1
                seg.item, seg.pruned = seg.pruned, None
                seg.item.uuid = f"{base}-v{seg.version}"
                seg.num_tokens = self.visual_tokens(seg.ids, seg.item)
        state.stale_count = 0
        state.compactions += 1
        state.warm_signature = ()  # renamed (pruned) items must be prefilled again

    # -- dialogue window -----------------------------------------------------------------------------------
    def remember(self, state: SessionState, request: AnswerRequest, answer: str) -> None:
        """Append the question and answer to the bounded text window (oldest turns removed first)."""
        window = self.config.text_window_tokens
        if not request.remember or window == 0:
            return
        text = self.layout.turn_text(request.t, request.question, answer)
        ids = self.layout.turn_ids(request.t, request.question, answer, window)
        if len(ids) < len(self.layout.ids(text)):
            text = self.layout.decode(ids)
        while state.history and self._history_tokens(state) + len(ids) > window:
            self._remove(state, [state.history.popleft()])
        sid = f"t{state.next_text_id}"
        state.next_text_id += 1
        state.segments.append(Segment(sid, "text", text, ids, len(ids)))
        state.history.append(sid)
        self.maybe_compact(state)

    # -- prompts -------------------------------------------------------------------------------------------
    def request_segments(self, state: SessionState, request: AnswerRequest | None) -> list[Segment]:
        """The context plus the recalled entries of ``request`` (its question is added by the engine)."""
        segments = list(state.segments)
        if request is not None:
            segments += [self.visual_segment(state, e, temporary=True) for e in request.recalled]
            needed = sum(s.num_tokens for s in segments) + len(self.question_ids(request))
            if needed + (request.max_new_tokens or self.config.max_new_tokens) > self.config.kv_cap_tokens + 4096:
                raise EngineError(f"the request needs {needed} tokens; the KV cap is {self.config.kv_cap_tokens}")
        return segments

    def token_prompt(
        self, segments: Sequence[Segment], question: list[int] | None
    ) -> tuple[list[int], list[VisualItem]]:
        """Token ids with one image placeholder per item (the server expands it), and the items in order."""
        ids: list[int] = []
        images: list[VisualItem] = []
        for seg in segments:
            ids += seg.ids
            if seg.item is not None:
                for image in split_frames(seg.item):
                    ids += self.layout.image_placeholder
                    images.append(image)
        if question is not None:
            ids += question
        return ids, images

    @staticmethod
    def mark_sent(segments: Sequence[Segment]) -> None:
        for seg in segments:
            seg.sent = True


def split_frames(item: VisualItem) -> list[VisualItem]:
    """One image per frame of a frames item (uuids ``<item>-f<i>``); an embeds item is one image."""
    if item.frames is None:
        return [item]
    return [
        VisualItem(f"{item.uuid}-f{i}", item.entry_id, frames=item.frames[i : i + 1])
        for i in range(item.frames.shape[0])
    ]
