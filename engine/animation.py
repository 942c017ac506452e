"""An animation's timeline: which frame and which story scene each iteration belongs to.

A still picture (`frames=0`) is one frame of `iterations`. An animation's first frame gets
`iterations`, each later one `frame_iterations`; between two frames the camera moves the picture
(`engine.camera`) and the optimiser starts afresh, as the peers' animations do. In story mode
('^' between prompts) the scenes share the iterations of a still picture evenly, in order (the
optimiser starting afresh at each), and the frames of an animation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.prompts import split_scenes
from engine.video import VideoPlan, plan_video


class Timeline:
    """The frames and scenes of a run's iterations (0-based)."""

    def __init__(self, s: Any):
        self.iterations, self.frames, self.per_frame = s.iterations, s.frames, s.frame_iterations
        self.fps = s.fps
        self.total: int = s.total_iterations
        self.scenes = len(split_scenes(s.prompts))

    @property
    def animated(self) -> bool:
        return self.frames > 0

    def frame_of(self, i: int) -> int:
        """The frame (0-based) iteration `i` works on; 0 for a still picture."""
        if not self.animated or i < self.iterations:
            return 0
        return 1 + (i - self.iterations) // self.per_frame

    def frame_start(self, i: int) -> int | None:
        """The frame (>= 1) whose first iteration is `i`, else None."""
        if self.animated and i >= self.iterations and (i - self.iterations) % self.per_frame == 0:
            return self.frame_of(i)
        return None

    def frames_done(self, i: int) -> int:
        """Frames finished (and put in the video) before iteration `i` starts."""
        if not self.animated or i <= self.iterations:
            return 0
        return min(self.frames - 1, 1 + (i - 1 - self.iterations) // self.per_frame)

    def scene_of(self, i: int) -> int:
        """The story scene iteration `i` aims at (0 without '^')."""
        if self.animated:
            return self.frame_of(i) * self.scenes // self.frames
        return i * self.scenes // self.iterations

    def scene_start(self, i: int) -> bool:
        """Whether a still picture's iteration `i` is the first of a new scene (the optimiser
        starts afresh there: its moments still push toward the last scene's picture)."""
        return not self.animated and i > 0 and self.scene_of(i) != self.scene_of(i - 1)

    def video_plan(self) -> VideoPlan:
        """A still's video samples the iterations (`plan_video`); an animation's has one video
        frame per frame, at its fps, and no held ending."""
        if self.animated:
            return VideoPlan(0, 1, self.frames, self.fps, hold_frames=0)
        return plan_video(self.iterations)


def frame_progress(settings: Mapping[str, Any], done: int) -> tuple[int, int]:
    """(frame, frames) of a run whose settings are `settings` (as JSON) after `done`
    iterations: the 1-based frame its last iteration worked on, of how many; (0, 0) for a still
    picture and frame 0 before the first iteration."""
    frames = int(settings.get("frames") or 0)
    if frames <= 0:
        return 0, 0
    if done <= 0:
        return 0, frames
    first, per = int(settings.get("iterations") or 0), int(settings.get("frame_iterations") or 1)
    i = done - 1
    return (1 if i < first else min(frames, 2 + (i - first) // per)), frames
