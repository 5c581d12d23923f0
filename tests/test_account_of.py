"""account_of reads only the account pairs; it must agree with a full parse of the body."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from hypothesis import given
from hypothesis import strategies as st

from integrations.amocrm.webhooks import account_int, account_of

values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


def reference(body: bytes) -> tuple[int | None, str | None]:
    pairs = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    sub = pairs.get("account[subdomain]")
    return (account_int(pairs["account[id]"]) if "account[id]" in pairs else None,
            (sub.strip() or None) if sub is not None else None)


@given(st.dictionaries(st.sampled_from(["account[id]", "account[subdomain]", "account[_links][self]",
                                        "leads[add][0][id]", "accounting", "message[add][0][text]"]),
                       values | st.integers(0, 2**70).map(str), max_size=6))
def test_agrees_with_a_full_parse(fields):
    body = urlencode(fields).encode()
    assert account_of(body) == reference(body)


def test_reads_percent_encoded_and_plain_keys():
    assert account_of(b"account%5Bid%5D=32427762&account%5Bsubdomain%5D=acme") == (32427762, "acme")
    assert account_of(b"leads[add][0][id]=1&account[id]=7") == (7, None)
    assert account_of(b"account[id]=%C2%B2") == (None, None)  # "²" is no id
