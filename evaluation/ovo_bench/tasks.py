"""The OVO-Bench tasks and categories, and the benchmark's prompts (``build_prompt`` text, whitespace included)."""

from __future__ import annotations

from collections.abc import Sequence

CATEGORIES = ("backward", "realtime", "forward")
TASK_CATEGORY: dict[str, str] = {
    "EPM": "backward",
    "ASI": "backward",
    "HLD": "backward",
    "OCR": "realtime",
    "ACR": "realtime",
    "ATR": "realtime",
    "STU": "realtime",
    "FPD": "realtime",
    "OJR": "realtime",
    "REC": "forward",
    "SSR": "forward",
    "CRR": "forward",
}
MULTIPLE_CHOICE_TASKS = tuple(t for t, c in TASK_CATEGORY.items() if c != "forward")
FORWARD_TASKS = ("REC", "SSR", "CRR")
VARIANTS = ("official", "strict")


# ----------------------------------------------------------------------------------------------------
# Prompts: the benchmark's build_prompt text (leading newline, 16-space indented lines, 12 spaces at the end).
# ----------------------------------------------------------------------------------------------------

_LINE_INDENT = " " * 16
_TAIL_INDENT = " " * 12


def _prompt(lines: Sequence[str], head: str = "\n") -> str:
    return head + "".join(f"{_LINE_INDENT}{line}\n" for line in lines) + _TAIL_INDENT


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """The prompt of a backward / real-time item: question, lettered options, answer with the letter only."""
    formatted = "; ".join(f"{chr(65 + i)}. {option}" for i, option in enumerate(options)) + ";"
    return _prompt(
        [
            f"Question: {question}",
            "Options:",
            formatted,
            "Respond only with the letter corresponding to your chosen option (e.g., A, B, C). ",
            "Do not include any additional text or explanation in your response.",
        ]
    )


def rec_prompt(activity: str) -> str:
    """The REC poll prompt: "How many times did they {activity}?" answered with a single number."""
    question = "How many times did they " + activity + "?"
    return _prompt(
        [
            "You're watching a video in which people may perform a certain type of action repetively. ",
            "The person performing this kind of action are referred to as 'they' in the following statement.",
            "You're task is to count how many times have different people in the video perform this kind of "
            "action in total.",
            "One complete motion counts as one. ",
            f"Now, answer the following question: {question}",
            "Provide your answer as a single number (e.g., 0, 1, 2, 3…) indicating the total count.",
            "Do not include any additional text or explanation in your response.",
        ],
        head=" \n",
    )


def ssr_prompt(step: str) -> str:
    """The SSR poll prompt: is the person currently performing ``step`` (Yes / No)."""
    return _prompt(
        [
            "You're watching a tutorial video which contain a sequential of steps. ",
            "The following is one step from the whole procedures: ",
            step,
            "Your task is to determine if the man or woman in the video is currently performing this step.",
            "Answer only with “Yes” or “No”.",
            "Do not include any additional text or explanation in your response.",
        ]
    )


def crr_prompt(question: str) -> str:
    """The CRR poll prompt: do the latest frames give enough information to answer ``question`` (Yes / No)."""
    return _prompt(
        [
            "You're responsible of answering questions based on the video content. ",
            "The following question are relevant to the latest frames, i.e. the end of the video.",
            question,
            "Decide whether existing visual content, especially latest frames, i.e. frames that near the end "
            "of the video, provide enough information for answering the question.",
            "Answer only with “Yes” or “No”.",
            "Do not include any additional text or explanation in your response.",
        ]
    )


def poll_answer(poll_type: int) -> str:
    """The answer a yes/no poll of this type expects: "Yes" for 1, "No" for 0."""
    return "Yes" if poll_type == 1 else "No"
