"""Small edits of the example account file, for the config tests: each test changes one
thing and expects the error (file, line, dotted key) that the change must produce."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "account.example.yaml"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


def edit(old: str, new: str, text: str = EXAMPLE_TEXT) -> str:
    """``text`` with its one ``old`` replaced by ``new``."""
    assert text.count(old) == 1, f"the text must hold {old!r} exactly once"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """The 1-based line where ``needle`` first appears (the test's own count, not the loader's)."""
    return text[: text.index(needle)].count("\n") + 1


def write(tmp_path: Path, text: str, name: str = "acme.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
