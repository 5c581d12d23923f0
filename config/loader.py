"""Load the admin's account YAML into `config.account` objects, with errors naming file and line.

YAML is composed into nodes first so every key keeps its line; the schema (config.schema)
reports YAML paths, and this module turns each into ``file:line path: message``. All the
problems of all the files come back at once in one `ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from config.account import AccountConfig
from config.errors import ConfigError, ConfigIssue
from config.schema import MISSING_MESSAGE, AccountSchema, got
from config.settings import require_env

__all__ = ["ConfigError", "load_account", "load_accounts", "resolve_webhook_secrets"]

PathKey = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as the strings the admin wrote (the schema parses them)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _index_lines(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], dupes: list[tuple[PathKey, int]]) -> None:
    """Record the 1-based line of every key and list item below `node`; note duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            if child in lines:
                dupes.append((child, key_node.start_mark.line + 1))
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index_lines(item, (*path, i), lines, dupes)


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(path: PathKey, lines: Mapping[PathKey, int]) -> int | None:
    """The line of the key at `path`, else of its nearest ancestor that is in the file."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1 if lines else None


def _value_at(data: Any, path: PathKey) -> Any:
    for part in path:
        in_mapping = isinstance(data, Mapping) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_mapping or in_list):
            return None
        data = data[part]
    return data


def _flatten(messages: Any, path: PathKey = ()) -> Iterable[tuple[PathKey, str]]:
    """marshmallow's nested error dict → (path, message) pairs; `_schema` belongs to its parent."""
    if isinstance(messages, Mapping):
        for key, sub in messages.items():
            yield from _flatten(sub, path if key == "_schema" else (*path, key))
    elif isinstance(messages, list | tuple):
        for item in messages:
            yield from _flatten(item, path)
    else:
        yield path, str(messages)


def _parse(text: str, name: str) -> tuple[Any, dict[PathKey, int], list[ConfigIssue]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, {}, [ConfigIssue(name, line, "", f"not valid YAML: {problem}")]
    finally:
        loader.dispose()
    lines: dict[PathKey, int] = {}
    dupes: list[tuple[PathKey, int]] = []
    if node is not None:
        _index_lines(node, (), lines, dupes)
    issues = [ConfigIssue(name, line, _dotted(p), "duplicate key (YAML keeps only the last one)") for p, line in dupes]
    return data, lines, issues


def _validate(data: Any, lines: Mapping[PathKey, int], name: str) -> tuple[AccountConfig | None, list[ConfigIssue]]:
    if not isinstance(data, Mapping):
        return None, [ConfigIssue(name, 1, "", f"expected a mapping of sections (account, calendar, …), got {got(data)}")]
    try:
        return AccountSchema().load(data), []
    except ValidationError as exc:
        issues = []
        for path, message in _flatten(exc.messages):
            if message == "expected a mapping":  # marshmallow's own type error, without the value
                message = f"expected a mapping, got {got(_value_at(data, path))}"
            line = _line_of(path[:-1], lines) if message == MISSING_MESSAGE else _line_of(path, lines)
            issues.append(ConfigIssue(name, line, _dotted(path), message))
        return None, issues


def _load(path: Path) -> tuple[AccountConfig | None, list[ConfigIssue]]:
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigIssue(str(path), None, "", f"cannot read: {exc}")]
    data, lines, issues = _parse(text, name)
    if issues and data is None:
        return None, issues
    cfg, more = _validate(data, lines, name)
    issues = sorted(issues + more, key=lambda i: (i.line or 0, i.path))
    if issues or cfg is None:
        return None, issues
    # `source` is not in the YAML: which file the account came from, for later messages.
    return replace(cfg, source=str(path)), []


def load_account(path: str | os.PathLike[str]) -> AccountConfig:
    """One account YAML file → AccountConfig, or ConfigError listing every problem in it."""
    cfg, issues = _load(Path(path))
    if issues or cfg is None:
        raise ConfigError(issues)
    return cfg


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


def load_accounts(path: str | os.PathLike[str]) -> tuple[AccountConfig, ...]:
    """One YAML file or a folder of them → the accounts; ConfigError lists every file's problems."""
    root = Path(path)
    if not root.exists():
        raise ConfigError([ConfigIssue(str(root), None, "", "no such file or folder")])
    files = _yaml_files(root) if root.is_dir() else [root]
    if not files:
        raise ConfigError([ConfigIssue(str(root), None, "", "the folder holds no *.yaml files")])
    accounts: list[AccountConfig] = []
    issues: list[ConfigIssue] = []
    for file in files:
        cfg, found = _load(file)
        issues.extend(found)
        if cfg is not None:
            accounts.append(cfg)
    seen: dict[int, AccountConfig] = {}
    for cfg in accounts:
        first = seen.setdefault(cfg.account_id, cfg)
        if first is not cfg:
            issues.append(
                ConfigIssue(
                    Path(cfg.source).name,
                    _account_id_line(Path(cfg.source)),
                    "account.id",
                    f"account {cfg.account_id} is already configured in {Path(first.source).name}",
                )
            )
    if issues:
        raise ConfigError(issues)
    return tuple(accounts)


def _account_id_line(path: Path) -> int | None:
    _, lines, _ = _parse(path.read_text(encoding="utf-8"), path.name)
    return lines.get(("account", "id"))


def resolve_webhook_secrets(
    accounts: Iterable[AccountConfig], env: Mapping[str, str] = os.environ
) -> dict[str, AccountConfig]:
    """Webhook secret (the last part of the webhook URL) → its account.

    A missing variable raises config.settings.MissingSetting naming it; two accounts sharing a
    secret is a ConfigError naming both files (a webhook could not be routed to one account).
    """
    by_secret: dict[str, AccountConfig] = {}
    issues: list[ConfigIssue] = []
    for cfg in accounts:
        var = cfg.account.webhook_secret_env
        secret = require_env(var, env)
        other = by_secret.setdefault(secret, cfg)
        if other is not cfg:
            issues.append(
                ConfigIssue(
                    Path(cfg.source).name or "?",
                    None,
                    "account.webhook_secret_env",
                    f"{var} holds the same webhook secret as {other.account.webhook_secret_env} "
                    f"of {Path(other.source).name or '?'}; each account needs its own",
                )
            )
    if issues:
        raise ConfigError(issues)
    return by_secret
