"""A memory entry (the kept tokens of one temporal step) and the typed operations that change a memory."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


def _check_integer(name: str, value: torch.Tensor) -> torch.Tensor:
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {value.dtype}")
    return value.long()


def _leading_view(features: torch.Tensor | None, embeddings: torch.Tensor | None) -> int | None:
    """C when ``features`` [K, C] is the view ``embeddings[:, :C]`` of [K, D'] rows, else None."""
    if features is None or embeddings is None or features.ndim != 2 or embeddings.ndim != 2:
        return None
    same = (
        features.device == embeddings.device
        and features.dtype == embeddings.dtype
        and features.shape[0] == embeddings.shape[0]
        and features.shape[1] < embeddings.shape[1]
        and features.data_ptr() == embeddings.data_ptr()
        and features.stride() == embeddings.stride()
    )
    return int(features.shape[1]) if same else None


@dataclass(slots=True)
class MemoryEntry:
    """The kept tokens of one temporal step (or of several pooled steps)."""

    entry_id: int
    """Unique, increasing in insertion order; VisualMemory.add assigns one when negative."""
    chunk_index: int
    """Perception step index (of the first step when pooled)."""
    t_start: float
    """Stream seconds."""
    t_end: float
    token_indices: torch.Tensor
    """[K] long: each kept token's index in its step's row-major token grid."""
    positions: torch.Tensor
    """[3, K] long: original M-RoPE (t, h, w) positions of the kept tokens."""
    embeddings: torch.Tensor | None = None
    """[K, D] visual embeddings the engine feeds; [K, D * (1 + L)] for models with DeepStack (Qwen3-VL): each
    row holds the token's embedding, then its L vision-layer features, so they follow the kept tokens as one."""
    features: torch.Tensor | None = None
    """[K, C] vectors the policies compare (embeddings are used when None); may be a leading-column view of
    ``embeddings`` (the embedding part of DeepStack rows)."""
    round: int = 0
    """Dialogue round at insertion."""
    pooled_from: tuple[int, ...] = ()
    """Ids of the entries averaged into this one."""
    frames: torch.Tensor | None = None
    """[T, H, W, 3] uint8 resized frames of the step, for engines that encode raw frames themselves."""

    def __post_init__(self) -> None:
        if self.token_indices.ndim != 1:
            raise ValueError(f"token_indices must be [K], got shape {tuple(self.token_indices.shape)}")
        self.token_indices = _check_integer("token_indices", self.token_indices)
        k = self.token_indices.numel()
        if tuple(self.positions.shape) != (3, k):
            raise ValueError(f"positions must be [3, {k}] (t, h, w per kept token), got {tuple(self.positions.shape)}")
        self.positions = _check_integer("positions", self.positions)
        for name in ("embeddings", "features"):
            value = getattr(self, name)
            if value is not None and (value.ndim != 2 or value.shape[0] != k):
                raise ValueError(f"{name} must be [{k}, D] (one vector per kept token), got {tuple(value.shape)}")
        if self.t_end < self.t_start:
            raise ValueError(f"t_end ({self.t_end}) is before t_start ({self.t_start})")
        self.pooled_from = tuple(int(i) for i in self.pooled_from)

    @property
    def num_tokens(self) -> int:
        return int(self.token_indices.numel())

    @property
    def vectors(self) -> torch.Tensor | None:
        """[K, C] what policies compare: features, else embeddings, else None."""
        return self.features if self.features is not None else self.embeddings

    @property
    def nbytes(self) -> int:
        """Bytes of all tensors (features shared with or viewed from the embeddings count once)."""
        tensors = [self.token_indices, self.positions, self.embeddings, self.frames]
        if self.features is not self.embeddings and _leading_view(self.features, self.embeddings) is None:
            tensors.append(self.features)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def select(self, keep: torch.Tensor) -> MemoryEntry:
        """The same entry (same id) restricted to ``keep``: [K] bool mask or [K'] long local indices."""
        k = self.num_tokens
        if keep.dtype == torch.bool:
            if tuple(keep.shape) != (k,):
                raise ValueError(f"a keep mask must be [{k}] bool, got {tuple(keep.shape)}")
            idx = keep.nonzero().squeeze(1)
        else:
            idx = _check_integer("keep", keep)
            if idx.ndim != 1:
                raise ValueError(f"keep indices must be [K'], got shape {tuple(idx.shape)}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= k):
                raise ValueError(f"keep indices must lie in [0, {k}), got {idx.min()}..{idx.max()}")
        shared = self.features is self.embeddings
        view = None if shared else _leading_view(self.features, self.embeddings)

        def take(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[idx.to(value.device)]

        embeddings = take(self.embeddings)
        if shared:
            features = embeddings
        elif view is not None:  # keep the features a view of the selected rows
            features = embeddings[:, :view]
        else:
            features = take(self.features)
        return replace(
            self,
            token_indices=self.token_indices[idx.to(self.token_indices.device)],
            positions=self.positions[:, idx.to(self.positions.device)],
            embeddings=embeddings,
            features=features,
        )


@dataclass(frozen=True, slots=True)
class Evict:
    """Whole entries removed."""

    entry_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Prune:
    """Tokens of an entry removed; the kept ones keep their positions."""

    entry_id: int
    keep: torch.Tensor
    """[K'] long ascending local indices of the tokens kept (at least one)."""


@dataclass(frozen=True, slots=True)
class Pool:
    """Entries replaced by one new entry (new id, changed positions) that an engine must prefill afresh."""

    source_ids: tuple[int, ...]
    entry: MemoryEntry


MemoryOp = Evict | Prune | Pool
