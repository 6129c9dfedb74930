"""Where a benchmark's videos lie: the layouts the benchmarks release, resolved for every query before a model loads.

OVO-Bench (``--videos`` is the benchmark's data folder):

- ``source``: the original videos at the annotation's ``video`` path (``{root}/{video}``, or under
  ``{root}/src_videos/``); a query sees the video up to ``ceil(realtime)`` seconds.
- ``chunked``: the released evaluation clips its own inference scripts read, ``chunked_videos/{id}.mp4`` for a
  backward or real-time item (the stream from 0 to its ``realtime``) and ``chunked_videos/{id}_{k}.mp4`` for poll
  ``k`` (0-based ``test_info`` index) of a forward item (from 0 to that poll's ``realtime``); also found directly
  under ``{root}``. A clip ends at its query time: it is played whole.

StreamingBench (``--videos`` is the benchmark's ``src/data`` folder, or the videos folder itself):

- ``flat``: ``videos/sample_N_{TYPE}.mp4`` as the annotation's ``video_path`` names it (what the benchmark's
  ``move_video.py`` makes of the released folders);
- ``samples``: the released folders, ``{TYPE}/sample_N/`` holding one ``.mp4`` (``TYPE`` with underscores or
  spaces);
- ``clips``: the prefix clips the benchmark's harness cuts, ``videos/tmp/sample_N_{TYPE}_0_{seconds}.mp4``
  (from 0 to the question's ``time_stamp``). Proactive questions need the whole video (``flat`` or ``samples``).

``auto`` picks the layout that finds the most videos (the first listed on a tie).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OVO_LAYOUTS = ("source", "chunked")
STREAMINGBENCH_LAYOUTS = ("flat", "samples", "clips")
CLIP_LAYOUTS = frozenset({"chunked", "clips"})
"""Layouts whose files end at their query's time."""


@dataclass(frozen=True, slots=True)
class VideoRef:
    """The file a query plays: ``source`` names the video it comes from; ``clip``: the file ends at the query."""

    path: Path
    source: str
    clip: bool


@dataclass(slots=True)
class Resolution:
    """Every query's file in the chosen layout; ``missing`` maps a query key to the first path looked for."""

    layout: str
    found: dict[str, VideoRef] = field(default_factory=dict)
    missing: dict[str, Path] = field(default_factory=dict)

    @property
    def missing_files(self) -> list[str]:
        """The distinct files not found, sorted."""
        return sorted({str(p) for p in self.missing.values()})

    def describe_missing(self) -> str:
        """One line: how many files are missing in this layout, with an example."""
        files = self.missing_files
        return f"{len(files)} video file(s) missing in the {self.layout} layout, e.g. {files[0]}" if files else ""


Candidates = Callable[[Any, Path, str], tuple[list[Path], str, bool]]
"""(query, root, layout) -> (paths to try in order, source name, whether the file is a clip)."""


def _resolve(queries: Sequence[Any], root: Path, layout: str, candidates: Candidates) -> Resolution:
    res = Resolution(layout)
    for q in queries:
        paths, source, clip = candidates(q, root, layout)
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            res.missing[q.key] = paths[0] if paths else root
        else:
            res.found[q.key] = VideoRef(hit, source, clip)
    return res


def _choose(
    queries: Sequence[Any], root: str | Path, layout: str, layouts: Sequence[str], candidates: Candidates
) -> Resolution:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--videos {root}: no such folder")
    if layout != "auto":
        if layout not in layouts:
            raise ValueError(f"unknown layout {layout!r}; expected auto or one of {', '.join(layouts)}")
        return _resolve(queries, root, layout, candidates)
    tried = [_resolve(queries, root, name, candidates) for name in layouts]
    return max(tried, key=lambda r: len(r.found))  # max keeps the first of equals


def nothing_found_message(res: Resolution, root: str | Path, layouts: Iterable[str]) -> str:
    """Why no video was found: the layouts tried and an example path of the chosen one."""
    example = res.missing_files[0] if res.missing else "?"
    return (
        f"no video found under {root} for any of the {len(res.missing)} queries (layouts tried: "
        f"{', '.join(layouts)}; e.g. {example}); check --videos and --layout"
    )


# ----------------------------------------------------------------------------------------------------
# OVO-Bench
# ----------------------------------------------------------------------------------------------------


def ovo_clip_name(item_id: int, poll_index: int | None) -> str:
    """The released clip's file name: ``{id}.mp4``, or ``{id}_{k}.mp4`` for poll ``k`` of a forward item."""
    return f"{item_id}.mp4" if poll_index is None else f"{item_id}_{poll_index}.mp4"


def _ovo_candidates(q: Any, root: Path, layout: str) -> tuple[list[Path], str, bool]:
    if layout == "source":
        return [root / q.video, root / "src_videos" / q.video], q.video, False
    name = ovo_clip_name(q.item_id, q.poll_index)
    return [root / "chunked_videos" / name, root / name], q.video, True


def resolve_ovo(queries: Sequence[Any], root: str | Path, layout: str = "auto") -> Resolution:
    """The file of every OVO-Bench query (``OvoQuery``) in ``layout`` (or the one that finds most)."""
    return _choose(queries, root, layout, OVO_LAYOUTS, _ovo_candidates)


# ----------------------------------------------------------------------------------------------------
# StreamingBench
# ----------------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(sample_\d+)_(.+)$")


def _relative(video_path: str) -> Path:
    return Path(video_path.removeprefix("./"))


def _sample_file(folder: Path) -> Path:
    """The video of a released sample folder: ``video.mp4``, else its one ``.mp4`` (a path that is no file)."""
    if (folder / "video.mp4").is_file():
        return folder / "video.mp4"
    found = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    return found[0] if len(found) == 1 else folder / "video.mp4"


def _sb_candidates(q: Any, root: Path, layout: str) -> tuple[list[Path], str, bool]:
    rel = _relative(q.video_path)
    if layout == "flat":
        return [root / rel, root / rel.name], q.video_path, False
    if layout == "samples":
        m = _SAMPLE.match(rel.stem)
        if m is None:
            return [], q.video_path, False
        sample, kind = m.groups()
        folders = [root / kind / sample, root / kind.replace("_", " ") / sample]
        return [_sample_file(f) for f in folders], q.video_path, False
    if q.is_proactive:  # the proactive harness polls past the question's time: no prefix clip serves
        return [root / rel], q.video_path, False
    name = f"{rel.stem}_0_{q.ask_time}.mp4"
    return [root / rel.parent / "tmp" / name, root / "tmp" / name, root / "videos" / "tmp" / name], q.video_path, True


def resolve_streamingbench(questions: Sequence[Any], root: str | Path, layout: str = "auto") -> Resolution:
    """The file of every StreamingBench question in ``layout`` (or the one that finds most)."""
    return _choose(questions, root, layout, STREAMINGBENCH_LAYOUTS, _sb_candidates)
