"""The hand parse of a delivery (form split, schema loaders) must agree with the plain one
(``parse_qsl`` and the marshmallow schemas) on every fixture and on generated input."""

from __future__ import annotations

import re
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from integrations.amocrm import webhook_schemas
from integrations.amocrm.webhook_loaders import LOADERS, NOTE_LOADER, HandLoader
from integrations.amocrm.webhooks import WebhookParseError, parse_delivery, parse_form
from tests.conftest import FIXTURES

LOADERS = [*LOADERS.values(), NOTE_LOADER]
FIXTURE_BODIES = sorted((FIXTURES / "webhooks").glob("*.txt")) + sorted(
    (FIXTURES / "webhooks_extra").glob("*.txt"))


def reference_form(body: str) -> dict[str, Any]:
    """parse_form as it was written before the hand split: parse_qsl, then the bracket keys."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, strict_parsing=False):
        parts = re.findall(r"[^\[\]]+", key)
        if not parts:
            continue
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    """A call's result, or its error class and message(s), to compare two paths."""
    try:
        return "ok", call(*args)
    except ValidationError as exc:
        return "invalid", exc.messages
    except WebhookParseError as exc:
        return "unreadable", str(exc)


def schema_only(body: str) -> tuple[str, Any]:
    with mock.patch.object(HandLoader, "load", lambda self, item: self.schema.load(item)):
        return outcome(parse_delivery, body)


# --- the form split ---------------------------------------------------------------------------

form_text = st.lists(st.sampled_from(list("ab[]0=&%+5BDz ё") + ["%5B", "%5D", "%D0%92", "%ZZ",
                                                                "%C3"])).map("".join)


@given(form_text)
def test_the_form_split_agrees_with_parse_qsl(body):
    assert parse_form(body) == reference_form(body)


@given(st.lists(st.tuples(st.sampled_from(["leads[status][0][id]", "leads[add][0][name]",
                                           "account[id]", "a b", "x[]", "[]", "", "q+r"]),
                          st.text(max_size=8)), max_size=8))
def test_encoded_pairs_agree_with_parse_qsl(pairs):
    body = urlencode(pairs)
    assert parse_form(body) == reference_form(body)
    assert parse_form(body.encode()) == reference_form(body)


def test_a_long_key_is_decoded_without_the_cache():
    key = "leads[add][0][" + "x" * 300 + "]"
    body = urlencode([(key, "1")])
    assert parse_form(body) == reference_form(body) == {"leads": {"add": {"0": {"x" * 300: "1"}}}}


# --- the schema loaders -----------------------------------------------------------------------

AWKWARD = [
    "", " ", "0", " 0 ", "12", " 12 ", "-5", "+7", "1_000", "٣", "²", "1.5", "abc", "true", "Y",
    "yes", "No", "1", "9223372036854775807", "9223372036854775808", "-9223372036854775807",
    "-9223372036854775808", "-9223372036854775809", "99999999999999", "-99999999999999",
    "1748268669", "9" * 30, "9" * 5000,
]
awkward = st.sampled_from(AWKWARD)
values = awkward | st.text(max_size=6) | st.dictionaries(st.sampled_from(["0", "1", "value"]),
                                                        st.text(max_size=3), max_size=2)


def field_values(f: Any) -> st.SearchStrategy[Any]:
    """Mostly what the field takes (so the hand path runs), with the awkward cases mixed in."""
    if isinstance(f, webhook_schemas.AmoInt):
        clean = st.integers(-2**64, 2**64).map(str)
    elif isinstance(f, webhook_schemas.UnixTime):
        clean = st.integers(-2**40, 2**40).map(str) | st.sampled_from(["0", " 0 ", ""])
    else:
        clean = st.text(max_size=6)
    return clean | awkward | values


@st.composite
def items(draw: Any) -> tuple[HandLoader, dict[str, Any]]:
    loader = draw(st.sampled_from(LOADERS))
    optional = {name: field_values(f) for name, f in loader.schema.load_fields.items()}
    optional["extra"] = values
    return loader, draw(st.fixed_dictionaries({}, optional=optional))


@settings(max_examples=500)
@given(items())
def test_hand_loaders_agree_with_their_schemas(case):
    loader, item = case
    assert outcome(loader.load, item) == outcome(loader.schema.load, item)


def test_every_awkward_value_in_every_field_loads_the_same_by_hand():
    for loader in LOADERS:
        base = {name: "1" for name in loader.schema.load_fields}
        for name in loader.schema.load_fields:
            for value in AWKWARD:
                item = {**base, name: value}
                assert outcome(loader.load, item) == outcome(loader.schema.load, item), item


def test_every_fixture_item_loads_the_same_by_hand():
    seen = 0
    for path in FIXTURE_BODIES:
        for actions in parse_form(path.read_text().strip()).values():
            for batch in actions.values() if isinstance(actions, dict) else []:
                for item in batch.values() if isinstance(batch, dict) else []:
                    if not isinstance(item, dict):  # parse_delivery never loads a non-object
                        continue
                    for loader in LOADERS:
                        seen += 1
                        assert outcome(loader.load, item) == outcome(loader.schema.load, item)
    assert seen > 50


def test_whole_deliveries_parse_the_same_by_hand():
    for path in FIXTURE_BODIES:
        body = path.read_text().strip()
        assert outcome(parse_delivery, body) == schema_only(body), path.name


lead_keys = st.sampled_from(["id", "name", "status_id", "pipeline_id", "price", "created_at",
                             "updated_at", "last_modified", "custom_fields][0][id",
                             "custom_fields][0][values][0][value", "talk_id", "is_read", "text",
                             "type", "note][id", "element_type", "complete_before", "status"])


@given(st.sampled_from(["leads[add]", "leads[status]", "leads[note]", "message[add]",
                        "talk[update]", "task[add]", "task[delete]"]),
       st.dictionaries(lead_keys, awkward | st.text(max_size=4), max_size=8))
def test_generated_deliveries_parse_the_same_by_hand(head, fields):
    body = urlencode([(f"{head}[0][{k}]", v) for k, v in fields.items()]
                     + [("account[id]", "32427762")])
    assert outcome(parse_delivery, body) == schema_only(body)


def test_hand_loaders_cover_every_schema():
    assert {type(loader.schema) for loader in LOADERS} == {
        type(s) for s in (*webhook_schemas.SCHEMAS.values(), webhook_schemas.NOTE_SCHEMA)}
