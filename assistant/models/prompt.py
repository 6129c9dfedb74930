"""The prompt layout of a model family: every piece of text and every special token the engines put around the
visual memory, in one place.

A session's context is one user turn that grows with the stream::

    [header: system prompt + user turn open] [<t s> <vision_start> visual tokens <vision_end>] ...
    [dialogue: "\\n[t s] Q: .. \\nA: ..\\n"] ... + per request: ["\\n[t s] question" + turn close + assistant open]

The transformers, vLLM and remote engines all build their prompts from one ``PromptLayout`` (the adapter's
``layout``), so their token ids agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class VisionTokenIds:
    """Special token ids that frame visual content in the prompt."""

    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int


QWEN_VL_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
"""Families that frame each image with vision start/end tokens."""
STAMP_FORMATS = {"qwen3_vl": "<{t:.1f} seconds>", "qwen3_vl_moe": "<{t:.1f} seconds>"}
"""Families with a native timestamp before each frame (Qwen3-VL's video prompts); others use ``DEFAULT_STAMP``."""
DEFAULT_STAMP = "<{t:.1f}s>"
ANSWER_OPEN = "<|im_end|>\n<|im_start|>assistant\n"
"""What closes the user turn after the question and opens the assistant's answer."""
PROBE_SUFFIX = " Answer yes or no."
YES_SPELLINGS = ("Yes", " Yes", "yes")
NO_SPELLINGS = ("No", " No", "no")


class PromptLayoutError(ValueError):
    """The tokenizer or checkpoint does not fit the layout (e.g. no distinct yes/no first tokens)."""


def _first_token_ids(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """First-token ids of the yes and no spellings, without ids both share (a shared space says nothing)."""

    def first(words: tuple[str, ...]) -> set[int]:
        return {tokenizer(w, add_special_tokens=False).input_ids[0] for w in words}

    yes, no = first(YES_SPELLINGS), first(NO_SPELLINGS)
    yes, no = yes - no, no - yes
    if not yes or not no:
        raise PromptLayoutError("the tokenizer does not separate 'Yes' from 'No' in their first token")
    return tuple(sorted(yes)), tuple(sorted(no))


@dataclass(frozen=True)
class PromptLayout:
    """Texts and token ids of the streaming chat layout of one tokenizer and model family."""

    tokenizer: Any
    family: str
    token_ids: VisionTokenIds
    image_placeholder: tuple[int, ...]
    """Token ids that stand for one image in a token prompt (the server expands its image token)."""
    stamp_format: str = DEFAULT_STAMP
    """How the stream time before a visual segment is written (``{t}`` in seconds)."""
    yes_ids: tuple[int, ...] = field(init=False)
    """First-token ids of 'Yes' spellings (probes)."""
    no_ids: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        yes, no = _first_token_ids(self.tokenizer)
        object.__setattr__(self, "yes_ids", yes)
        object.__setattr__(self, "no_ids", no)

    @classmethod
    def build(cls, tokenizer: Any, family: str, token_ids: VisionTokenIds, model_config: Any) -> PromptLayout:
        """The layout of a checkpoint: Qwen-VL frames images with vision start/end, others use their image token."""
        if family in QWEN_VL_FAMILIES:
            placeholder: tuple[int, ...] = (token_ids.vision_start, token_ids.image_pad, token_ids.vision_end)
        else:
            token = getattr(model_config, "image_token_index", None)
            if token is None:
                token = getattr(model_config, "image_token_id", None)
            if token is None:
                kind = getattr(model_config, "model_type", "?")
                raise PromptLayoutError(f"cannot tell the image token of a {kind!r} checkpoint")
            placeholder = (int(token),)
        return cls(tokenizer, family, token_ids, placeholder, STAMP_FORMATS.get(family, DEFAULT_STAMP))

    # -- tokens ----------------------------------------------------------------------------------------------
    def ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    # -- the header ------------------------------------------------------------------------------------------
    @staticmethod
    def header_text(system_prompt: str) -> str:
        """The system turn and the opening of the user turn that holds the stream."""
        return f"<|im_start|>system\n{system_prompt}<|im_end|>\n<|im_start|>user\n"

    def header_ids(self, system_prompt: str) -> list[int]:
        return self.ids(self.header_text(system_prompt))

    # -- visual segments -------------------------------------------------------------------------------------
    def stamp_text(self, t: float) -> str:
        """The stream time before a visual segment, e.g. ``<12.0s>`` (Qwen3-VL: ``<12.0 seconds>``)."""
        return self.stamp_format.format(t=t)

    def stamp_ids(self, t: float) -> list[int]:
        return self.ids(self.stamp_text(t))

    def video_segment_ids(self, t: float, num_tokens: int) -> tuple[list[int], int]:
        """Ids of a visual segment holding ``num_tokens`` video tokens, and the offset of the first of them."""
        stamp = self.stamp_ids(t)
        tid = self.token_ids
        return [*stamp, tid.vision_start, *([tid.video_pad] * num_tokens), tid.vision_end], len(stamp) + 1

    @property
    def video_framing(self) -> int:
        """Tokens around a visual segment's video tokens (vision start and end)."""
        return 2

    @property
    def image_framing(self) -> int:
        """Tokens around one image's expanded tokens in a token prompt."""
        return len(self.image_placeholder) - 1

    # -- questions and dialogue ------------------------------------------------------------------------------
    @staticmethod
    def question_text(t: float, question: str) -> str:
        """The question as it follows the context (a chat template closes the turn after it)."""
        return f"\n[{t:.1f}s] {question}"

    def question_ids(self, t: float, question: str) -> list[int]:
        """The question, the end of the user turn and the assistant's opening."""
        return self.ids(self.question_text(t, question) + ANSWER_OPEN)

    @staticmethod
    def probe_question(question: str) -> str:
        """A yes/no question as it is asked."""
        return f"{question}{PROBE_SUFFIX}"

    @staticmethod
    def turn_text(t: float, question: str, answer: str) -> str:
        """One remembered exchange of the dialogue window."""
        return f"\n[{t:.1f}s] Q: {question}\nA: {answer.strip()}\n"

    def turn_ids(self, t: float, question: str, answer: str, limit: int) -> list[int]:
        """Ids of an exchange, clipped to ``limit`` tokens (its head and tail kept)."""
        ids = self.ids(self.turn_text(t, question, answer))
        if len(ids) > limit:
            ids = ids[: limit // 2] + ids[-(limit - limit // 2) :]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids (special tokens kept)."""
        return self.tokenizer.decode(list(ids))
