"""architecture.md's layer table as a test: every import, function-local ones too, goes down."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (module prefix, layer), the first match wins; architecture.md: each layer may import only
# the layers below it, and nothing imports a face (5).
LAYERS = (
    ("config", 1),
    ("integrations", 2),
    ("app.models", 3), ("app.db", 3), ("app.migrate", 3), ("app.pg_insert", 3),
    ("app.calendar", 3), ("app.metrics", 3),
    ("jobs", 4),
    ("app.web", 5), ("app.cli", 5), ("app.commands", 5),
)
PURE = ("app.metrics", "app.calendar")  # plain records in, numbers out
IMPURE = ("flask", "redis", "rq", "sqlalchemy", "requests", "os", "time", "app.db", "app.models")


def layer_of(module: str) -> int | None:
    return next((n for p, n in LAYERS if module == p or module.startswith(p + ".")), None)


def imports(path: Path) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, node.lineno


def modules() -> Iterator[tuple[Path, str]]:
    for top in ("config", "integrations", "app", "jobs"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:  # Alembic's revisions: frozen history
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield path, name.removesuffix(".__init__")


def test_every_module_has_a_layer() -> None:
    missing = [name for _, name in modules() if name != "app" and layer_of(name) is None]
    assert not missing, f"add these to architecture.md's table and to LAYERS: {missing}"


def test_every_import_goes_down_the_layers() -> None:
    upward = []
    for path, name in modules():
        mine = layer_of(name)
        for target, line in imports(path):
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line} {name} (layer {mine}) "
                              f"imports {target} (layer {theirs})")
    assert not upward, "\n".join(upward)


def test_only_the_web_face_knows_flask_and_integrations_know_no_database() -> None:
    wrong = []
    for path, name in modules():
        for target, line in imports(path):
            top = target.split(".")[0]
            if top == "flask" and not name.startswith("app.web"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
            if name.startswith("integrations") and top == "sqlalchemy":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_metric_math_and_the_calendar_stay_pure() -> None:
    impure = []
    for path, name in modules():
        if not name.startswith(PURE):
            continue
        for target, line in imports(path):
            if target.split(".")[0] in IMPURE or target.startswith(IMPURE):
                impure.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
        text = path.read_text(encoding="utf-8")
        if ".now(" in text or ".today(" in text:
            impure.append(f"{path.relative_to(ROOT)}: reads the clock")
    assert not impure, "\n".join(impure)
