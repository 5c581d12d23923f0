"""Several accounts: a folder of YAML files, unique account ids, webhook routing by secret."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.loader import load_accounts, resolve_webhook_secrets
from config.settings import MissingSetting

ACCOUNTS = Path(__file__).parent / "fixtures" / "config" / "accounts"
ENV = {"AMOSCORE_WEBHOOK_SECRET": "s3cret-acme", "BETA_WEBHOOK_SECRET": "s3cret-beta"}


def test_a_folder_loads_every_account_in_file_order() -> None:
    accounts = load_accounts(ACCOUNTS)
    assert [(Path(a.source).name, a.account_id) for a in accounts] == [
        ("acme.yaml", 32427762),
        ("beta.yaml", 31000001),
    ]


def test_a_single_file_is_one_account() -> None:
    (only,) = load_accounts(ACCOUNTS / "beta.yaml")
    assert only.account.subdomain == "beta"


def test_webhooks_route_by_secret() -> None:
    acme, beta = load_accounts(ACCOUNTS)
    routes = resolve_webhook_secrets((acme, beta), ENV)
    assert routes == {"s3cret-acme": acme, "s3cret-beta": beta}


def test_a_missing_secret_names_its_variable() -> None:
    with pytest.raises(MissingSetting, match="BETA_WEBHOOK_SECRET"):
        resolve_webhook_secrets(load_accounts(ACCOUNTS), {"AMOSCORE_WEBHOOK_SECRET": "x"})


def test_a_shared_secret_names_both_files() -> None:
    env = {"AMOSCORE_WEBHOOK_SECRET": "shared-Zq9", "BETA_WEBHOOK_SECRET": "shared-Zq9"}
    with pytest.raises(ConfigError) as caught:
        resolve_webhook_secrets(load_accounts(ACCOUNTS), env)
    assert caught.value.lines == [
        "beta.yaml account.webhook_secret_env: BETA_WEBHOOK_SECRET holds the same webhook secret as "
        "AMOSCORE_WEBHOOK_SECRET of acme.yaml; each account needs its own"
    ]
    assert "shared-Zq9" not in str(caught.value)  # the secret itself is never shown


def test_the_same_account_id_twice_names_both_files(tmp_path: Path) -> None:
    shutil.copy(ACCOUNTS / "acme.yaml", tmp_path / "acme.yaml")
    shutil.copy(ACCOUNTS / "acme.yaml", tmp_path / "acme-copy.yaml")
    with pytest.raises(ConfigError) as caught:
        load_accounts(tmp_path)
    # sorted: acme-copy.yaml is read first, so the second file is the duplicate
    assert caught.value.lines[0] == (
        "acme.yaml:9 account.id: account 32427762 is already configured in acme-copy.yaml")


def test_two_accounts_may_not_share_an_amocrm_a_secret_variable_or_a_token_variable(
        tmp_path: Path) -> None:
    """A copy with only its id changed: its sync would read, write and create tasks in the
    first account's amoCRM with the first account's token."""
    text = (ACCOUNTS / "acme.yaml").read_text(encoding="utf-8")
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(text.replace("id: 32427762", "id: 32427999"),
                                     encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_accounts(tmp_path)
    assert caught.value.lines == [
        "b.yaml:8 account.subdomain: acme.amocrm.ru is already the amoCRM of a.yaml",
        "b.yaml:12 account.webhook_secret_env: AMOSCORE_WEBHOOK_SECRET already holds the "
        "webhook secret of a.yaml; each account needs its own",
        "b.yaml:14 account.auth.long_lived_token_env: AMOCRM_LONG_LIVED_TOKEN already holds the "
        "token of a.yaml; each account needs its own",
    ]


def test_errors_of_every_file_come_together(tmp_path: Path) -> None:
    good = (ACCOUNTS / "beta.yaml").read_text(encoding="utf-8")
    (tmp_path / "a.yaml").write_text(good.replace("id: 31000001", 'id: "x"'), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(good.replace("kommo.com", "example.com"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_accounts(tmp_path)
    assert caught.value.lines == [
        'a.yaml:4 account.id: expected an integer, got "x"',
        'b.yaml:5 account.base_domain: must be one of amocrm.ru|amocrm.com|kommo.com, got "example.com"',
    ]


def test_an_empty_folder_or_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\*.yaml files"):
        load_accounts(tmp_path)
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_accounts(tmp_path / "nope.yaml")


def test_accounts_on_oauth_may_keep_the_examples_token_variable(tmp_path: Path) -> None:
    """Two YAMLs copied from the example, each with its own OAuth client: the long-lived
    token variable they both still name may stay unset, so it is shared by nobody."""
    text = (ACCOUNTS / "acme.yaml").read_text(encoding="utf-8").replace(
        "    # client_id: 3f1c...", "    client_id: 3f1c").replace(
        "    # client_secret_env: AMOCRM_CLIENT_SECRET", "    client_secret_env: AMOCRM_CLIENT_SECRET").replace(
        "    # redirect_uri: https", "    redirect_uri: https")
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        text.replace("id: 32427762", "id: 32427999").replace("subdomain: acme", "subdomain: acme2")
        .replace("AMOSCORE_WEBHOOK_SECRET", "B_WEBHOOK_SECRET"), encoding="utf-8")
    assert [a.account_id for a in load_accounts(tmp_path)] == [32427762, 32427999]


def test_a_short_secret_is_warned_about_without_showing_it(caplog) -> None:
    """Anyone who guesses the hook URL's last part can post webhooks: a short one still routes
    (a running install must not stop over it), with a warning naming the variable."""
    long_one = "Jx3k9QmVw2Lr8TzYb5Nd"
    env = {"AMOSCORE_WEBHOOK_SECRET": "s3cret-acme", "BETA_WEBHOOK_SECRET": long_one}
    with caplog.at_level("WARNING", logger="amoscore.config"):
        routes = resolve_webhook_secrets(load_accounts(ACCOUNTS), env)
    assert set(routes) == {"s3cret-acme", long_one}
    [record] = caplog.records
    assert "AMOSCORE_WEBHOOK_SECRET" in record.getMessage() and "length=11" in record.getMessage()
    assert "s3cret-acme" not in caplog.text
