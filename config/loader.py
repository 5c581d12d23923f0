"""Load the admin's account YAML into `config.account` objects, with errors naming file and line.

YAML is composed into nodes first so every key keeps its line; the schema (config.schema)
reports YAML paths, and this module turns each into ``file:line path: message``. All the
problems of all the files come back at once in one `ConfigError`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from config.account import AccountConfig
from config.errors import ConfigError, ConfigIssue
from config.schema import MISSING_MESSAGE, AccountSchema, got, quote_hint
from config.settings import require_env

__all__ = ["ConfigError", "load_account", "load_accounts", "resolve_webhook_secrets"]

PathKey = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as the strings the admin wrote (the schema parses them), and
    reads only plain decimal numbers as numbers.

    YAML 1.1 (PyYAML) reads 010 as 8 (octal), 1:30 as 90 (base 60), 0x10, 0b10 and 1_000 too;
    an admin writing an id or minutes means none of that. Those forms stay strings, so the
    schema names the key ("expected an integer, got "010"") instead of silently using 8.
    """


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_PLAIN_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_PLAIN_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.[0-9]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_NUMBER_RESOLVERS = {_INT: _PLAIN_INT, _FLOAT: _PLAIN_FLOAT}


def _resolvers(resolvers: list[tuple[str, re.Pattern[str]]]) -> list[tuple[str, re.Pattern[str]]]:
    return [
        (tag, _NUMBER_RESOLVERS.get(tag, rx))
        for tag, rx in resolvers
        if tag != "tag:yaml.org,2002:timestamp"
    ]


_Loader.yaml_implicit_resolvers = {
    first: _resolvers(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Index:
    """What the composed YAML tells beyond the data: lines, duplicate keys, booleans as written."""

    def __init__(self) -> None:
        self.lines: dict[PathKey, int] = {}
        self.dupes: list[tuple[PathKey, int]] = []
        self.bool_texts: dict[PathKey, str] = {}  # path -> "NO" where YAML 1.1 read a boolean

    def add(self, node: yaml.Node, path: PathKey = ()) -> None:
        """Record the 1-based line of every key and list item below `node`; note duplicate keys.

        A duplicated key is reported once: what was recorded below its first occurrence is
        dropped (YAML keeps only the last one), so a repeated section does not also report each
        of its keys as a duplicate.
        """
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, key_node.value)
                if child in self.lines:
                    self.dupes.append((child, key_node.start_mark.line + 1))
                    self._forget_below(child)
                self.lines[child] = key_node.start_mark.line + 1
                self.add(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = item.start_mark.line + 1
                self.add(item, (*path, i))
        elif isinstance(node, yaml.ScalarNode) and node.tag == _BOOL:
            self.bool_texts[path] = node.value

    def _forget_below(self, path: PathKey) -> None:
        n = len(path)
        for table in (self.lines, self.bool_texts):
            for key in [k for k in table if len(k) > n and k[:n] == path]:
                del table[key]


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


def _parse(text: str, name: str) -> tuple[Any, _Index, list[ConfigIssue]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, _Index(), [ConfigIssue(name, line, "", f"not valid YAML: {problem}")]
    finally:
        loader.dispose()
    index = _Index()
    if node is not None:
        index.add(node)
    issues = [
        ConfigIssue(name, line, _dotted(p), "duplicate key (YAML keeps only the last one)") for p, line in index.dupes
    ]
    return data, index, issues


def _as_written(message: str, path: PathKey, index: _Index) -> str:
    """A "quote it" hint names the word as the admin wrote it (NO), not as YAML read it (false)."""
    text = index.bool_texts.get(path)
    if text is None:
        return message
    read_as = text.lower() in ("yes", "true", "on")
    return message.replace(quote_hint(read_as), f' (quote it: "{text}")')


def _validate(data: Any, index: _Index, name: str) -> tuple[AccountConfig | None, list[ConfigIssue]]:
    lines = index.lines
    if not isinstance(data, Mapping):
        return None, [ConfigIssue(name, 1, "", f"expected a mapping of sections (account, calendar, …), got {got(data)}")]
    try:
        return AccountSchema().load(data), []
    except ValidationError as exc:
        issues = []
        for path, message in _flatten(exc.messages):
            if message == "expected a mapping":  # marshmallow's own type error, without the value
                message = f"expected a mapping, got {got(_value_at(data, path))}"
            message = _as_written(message, path, index)
            line = _line_of(path[:-1], lines) if message == MISSING_MESSAGE else _line_of(path, lines)
            issues.append(ConfigIssue(name, line, _dotted(path), message))
        return None, issues


def _load(path: Path) -> tuple[AccountConfig | None, list[ConfigIssue]]:
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigIssue(str(path), None, "", f"cannot read: {exc}")]
    cfg, issues = _from_text(text, name)
    # `source` is not in the YAML: which file the account came from, for later messages.
    return (None, issues) if cfg is None else (replace(cfg, source=str(path)), [])


def _from_text(text: str, name: str) -> tuple[AccountConfig | None, list[ConfigIssue]]:
    data, index, issues = _parse(text, name)
    if issues and data is None:
        return None, issues
    cfg, more = _validate(data, index, name)
    issues = sorted(issues + more, key=lambda i: (i.line or 0, i.path))
    if issues or cfg is None:
        return None, issues
    return replace(cfg, text=text), []


def account_from_text(text: str, name: str) -> AccountConfig:
    """An account YAML's text (as a sync kept it) → AccountConfig, or ConfigError."""
    cfg, issues = _from_text(text, name)
    if issues or cfg is None:
        raise ConfigError(issues)
    return cfg


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
    issues.extend(_shared_between_accounts(accounts))
    if issues:
        raise ConfigError(issues)
    return tuple(accounts)


# What no two accounts may share: one id; one amoCRM address (the second account's sync would
# read, write and create tasks in the first's amoCRM); one webhook secret and one long-lived
# token variable (each belongs to one account). An OAuth client may serve several accounts.
_UNIQUE: tuple[tuple[str, Callable[[AccountConfig], object], str], ...] = (
    ("account.id", lambda c: c.account_id, "account {} is already configured in {}"),
    ("account.subdomain", lambda c: (c.account.subdomain, c.account.base_domain),
     "{0[0]}.{0[1]} is already the amoCRM of {1}"),
    ("account.webhook_secret_env", lambda c: c.account.webhook_secret_env,
     "{} already holds the webhook secret of {}; each account needs its own"),
    # Only where it is the way in: with an OAuth client the variable may stay unset.
    ("account.auth.long_lived_token_env",
     lambda c: None if c.account.auth.client_id else c.account.auth.long_lived_token_env,
     "{} already holds the token of {}; each account needs its own"),
)


def _shared_between_accounts(accounts: list[AccountConfig]) -> list[ConfigIssue]:
    issues = []
    for key, value_of, message in _UNIQUE:
        seen: dict[object, AccountConfig] = {}
        for cfg in accounts:
            value = value_of(cfg)
            if value is None:
                continue
            first = seen.setdefault(value, cfg)
            if first is not cfg:
                issues.append(ConfigIssue(
                    Path(cfg.source).name, _line(Path(cfg.source), tuple(key.split("."))), key,
                    message.format(value, Path(first.source).name)))
    return issues


def _line(path: Path, key: tuple[str, ...]) -> int | None:
    _, index, _ = _parse(path.read_text(encoding="utf-8"), path.name)
    return index.lines.get(key)


log = logging.getLogger("amoscore.config")

# Anyone who guesses the hook URL's last part can post webhooks; a short one is warned about
# (not refused: a running install must not stop over it).
SHORT_SECRET = 16


def previous_secret_env(var: str) -> str:
    """The variable that keeps an account's old webhook secret working while it is changed."""
    return f"{var}_PREVIOUS"


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
        if len(secret) < SHORT_SECRET:
            log.warning("config.short_webhook_secret variable=%s length=%d: use at least %d "
                        "random characters, e.g. python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))'", var, len(secret), SHORT_SECRET)
        # While a secret is changed, amoCRM posts to the old URL until the hook is edited:
        # <VAR>_PREVIOUS keeps that URL working meanwhile (a 404 loses the delivery).
        previous = env.get(previous_secret_env(var)) or None
        for name, value in ((var, secret), (previous_secret_env(var), previous)):
            if value is None or (value == secret and name != var):
                continue
            other = by_secret.setdefault(value, cfg)
            if other is not cfg:
                issues.append(
                    ConfigIssue(
                        Path(cfg.source).name or "?",
                        None,
                        "account.webhook_secret_env",
                        f"{name} holds the same webhook secret as "
                        f"{other.account.webhook_secret_env} of "
                        f"{Path(other.source).name or '?'}; each account needs its own",
                    )
                )
    if issues:
        raise ConfigError(issues)
    return by_secret
