"""What grading one submission produces: per-task points and messages, written answers, notes.

Much of the text in a result comes from the student's kernel (an exception's message), from
the submitted file (a written answer) or from its file name, so every string is cleaned when
a result is made (:func:`clean_text`): a lone surrogate (``"\\ud800"``, or the ``"\\udcff"`` that
stands for an undecodable byte in a file name) cannot be written as UTF-8, and one such string
used to stop the whole batch after all grading was done. Control characters go too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NEEDS_MANUAL = "needs manual grading"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: object) -> str:
    """``text`` as a string any UTF-8 writer accepts: undecodable bytes and lone surrogates become
    visible escapes (``\\xff``, ``\\ud800``), control characters other than newline and tab go."""
    text = str(text)
    try:
        data = text.encode("utf-8", "surrogateescape")  # a file name's undecodable byte, back to the byte
    except UnicodeEncodeError:
        data = text.encode("utf-8", "backslashreplace")
    return _CONTROL.sub("", data.decode("utf-8", "backslashreplace"))


@dataclass
class TaskResult:
    grade_id: str
    score: float
    max_score: float
    passed: bool
    message: str

    def __post_init__(self):
        self.grade_id, self.message = clean_text(self.grade_id), clean_text(self.message)

    def as_dict(self) -> dict:
        return {"grade_id": self.grade_id, "score": self.score, "max_score": self.max_score,
                "passed": self.passed, "message": self.message}


@dataclass
class ManualResult:
    """A written answer: graded by hand, so it carries no score until a person gives one --
    except an answer left as released, which is 0 and needs no one's time."""

    grade_id: str
    max_score: float
    answered: bool
    answer: str = ""
    message: str = NEEDS_MANUAL

    def __post_init__(self):
        self.grade_id, self.answer, self.message = map(clean_text, (self.grade_id, self.answer, self.message))

    @property
    def score(self) -> float | None:
        return None if self.answered else 0.0

    def as_dict(self) -> dict:
        """nbgrader's names: ``needs_manual_grade``; ``score`` is null until graded by hand."""
        return {"grade_id": self.grade_id, "score": self.score, "max_score": self.max_score,
                "needs_manual_grade": self.answered, "message": self.message, "answer": self.answer}


@dataclass
class GradeResult:
    exercise: str
    score: float
    max_score: float
    tasks: list[TaskResult]
    error: str = ""  # set when the submission could not be graded at all
    notes: list[str] = field(default_factory=list)
    manual: list[ManualResult] = field(default_factory=list)  # written answers, graded by hand

    def __post_init__(self):
        self.exercise, self.error = clean_text(self.exercise), clean_text(self.error)
        self.notes = [clean_text(n) for n in self.notes]

    @property
    def manual_max_score(self) -> float:
        return sum(m.max_score for m in self.manual)

    def as_dict(self) -> dict:
        """nbgrader's names; ``error``, ``notes`` and the written answers (``manual``,
        ``manual_max_score``: not included in ``score`` / ``max_score``) only when there are any."""
        out = {"exercise": self.exercise, "score": self.score, "max_score": self.max_score,
               "tasks": [t.as_dict() for t in self.tasks]}
        if self.manual:
            out["manual"] = [m.as_dict() for m in self.manual]
            out["manual_max_score"] = self.manual_max_score
        if self.error:
            out["error"] = self.error
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> GradeResult:
        """The inverse of :meth:`as_dict` (merging results graded elsewhere)."""
        tasks = [TaskResult(t["grade_id"], float(t["score"]), float(t["max_score"]), bool(t["passed"]),
                            str(t.get("message", ""))) for t in data.get("tasks", [])]
        manual = [ManualResult(m["grade_id"], float(m["max_score"]), bool(m.get("needs_manual_grade")),
                               str(m.get("answer", "")), str(m.get("message", NEEDS_MANUAL)))
                  for m in data.get("manual", [])]
        return cls(str(data.get("exercise", "")), float(data.get("score", 0.0)), float(data.get("max_score", 0.0)),
                   tasks, str(data.get("error", "")), [str(n) for n in data.get("notes", [])], manual)

    @classmethod
    def failed(cls, reason: object, tests: list[tuple[str, float]] = (), manual: list[tuple[str, float]] = (),
               exercise: str = "", max_score: float = 0.0) -> GradeResult:
        """Zero points with the reason, listing the exercise's tasks when it is known."""
        why = clean_text(reason)
        tasks = [TaskResult(gid, 0.0, pts, False, f"not graded: {why}") for gid, pts in tests]
        answers = [ManualResult(gid, pts, False, "", f"not graded: {why}") for gid, pts in manual]
        return cls(exercise, 0.0, max_score, tasks, error=why, manual=answers)
