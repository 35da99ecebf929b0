"""Redaction of free text: contact details and names in the shapes people write them, and what stays."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from mesh_platform.sources.simulation.insurance import simulate_claims, simulate_conversations, simulate_customers, simulate_policies
from mesh_platform.foundations.text import redact_contact_details, redact_emails, redact_names, redact_phone_numbers


def one(text: str, name: str | None = None, region: str = "GB") -> str:
    names = None if name is None else pd.Series([name])
    return redact_contact_details(pd.Series([text]), names=names, region=region).iloc[0]


@pytest.mark.parametrize(
    "number",
    [
        "+44 20 7946 0958",  # international, spaced
        "+442079460958",
        "+44 (0)20 7946 0958",  # trunk prefix in brackets
        "020 7946 0958",  # national
        "(020) 7946 0958",  # parenthesised area code
        "020-7946-0958",
        "020.7946.0958",  # dotted
        "0044 20 7946 0958",  # international dialling prefix
        "+44 7700 900123",
        "07700 900123",
        "07700900123",
        "07700-900-123",
        "(07700) 900123",
        "07700.900.123",
        "+44 (0)7700 900 123",
        "(555) 123-4567",  # North American shapes, read in the default region
        "555.123.4567",
        "555-123-4567",
        "+1 415 555 0132",
        "1-800-555-0199",
        "0049 30 1234567",
        "+49 30 1234567",
        "+33 1 23 45 67 89",
        "01.23.45.67.89",
        "+353 1 234 5678",
    ],
)
def test_phone_numbers_in_every_common_shape_are_redacted(number):
    for text in (f"Please call me back on {number}.", f"{number} is my number", f"tel:{number}", f"(mobile: {number})"):
        out = one(text)
        assert "[phone]" in out, (text, out)
        assert not re.search(r"\d{3}", out), (text, out)  # no part of the number is left behind


def test_two_numbers_side_by_side_are_both_redacted():
    assert one("numbers 07700 900123 020 7946 0958 ok") == "numbers [phone] [phone] ok"
    assert one("call 07700 900123 or +44 20 7946 0958.") == "call [phone] or [phone]."
    assert one("+44 7700 900123 +44 7700 900124") == "[phone] [phone]"
    assert one("07700 900123,07700 900124") == "[phone],[phone]"
    assert one("07700 900123/020 7946 0958") == "[phone]/[phone]"


@pytest.mark.parametrize(
    "text",
    [
        "I have a question about policy POL-0000123 and my claim CLM-0008911 (conversation CNV-00000012).",
        "policyholder PH-0000042, POL0000123",
        "I claimed £1,234.56 and £19,214.85; the sum insured is 250,000.00 or 250000, paid 1234567.89 GBP.",
        "It happened on 2026-06-30 at 14:05, reported 30/06/2026, settled 2026-07-02T09:15:00.",
        "From 2026-06-30 14:05:00 to 30.06.2026 09:15.",
        "The claim ref is 12345678 and the code 0000123, for the years 2024 to 2025.",
        "My postcode district is AB12; 3 cars, 2 claims, 15% excess.",
    ],
)
def test_ids_amounts_and_dates_are_kept(text):
    assert one(text) == text


def test_the_default_region_reads_national_numbers_and_is_configurable():
    assert one("call 07700 900123 today", region="GB") == "call [phone] today"
    assert one("call (415) 555-0132 today", region="US") == "call [phone] today"
    assert one("call 030 1234567 today", region="DE") == "call [phone] today"
    with pytest.raises(ValueError, match="unknown phone region 'UK'"):
        redact_phone_numbers(pd.Series(["07700 900123"]), region="UK")


@pytest.mark.parametrize(
    "email",
    ["olivia.smith12@example.com", "Olivia.Smith12@Example.COM", "o_s+claims@mail.example.co.uk", "x@ex-ample.org", "first.o'neil@example.ie"],
)
def test_emails_are_redacted(email):
    assert one(f"Mail me at {email}, thanks") == "Mail me at [email], thanks"
    assert one(f"mailto:{email}") == "mailto:[email]"
    assert one(f"<{email}>") == "<[email]>"


def test_something_at_something_that_is_no_address_is_kept():
    for text in ("meet @ 5pm", "price @ £3.50 each", "team@ work", "an @mention"):
        assert one(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, this is Olivia Smith.", "Hello, this is [name]."),
        ("Hi, olivia smith here.", "Hi, [name] here."),
        ("HI, OLIVIA SMITH HERE.", "HI, [name] HERE."),
        ("Olivia   Smith called.", "[name] called."),
        ("Hi, Olivia here.", "Hi, [name] here."),
        ("Thanks Mrs Smith, noted.", "Thanks [name], noted."),
        ("Thanks Mrs. Smith, noted.", "Thanks [name], noted."),
        ("Thanks Dr smith, noted.", "Thanks [name], noted."),
        ("Thanks mr Smith and Ms Smith.", "Thanks [name] and [name]."),
        ("Smith, Olivia", "[name], [name]"),
        ("calling on Olivia's behalf about Smith's car", "calling on [name]'s behalf about [name]'s car"),
        ("Olivia’s car", "[name]’s car"),
    ],
)
def test_the_persons_name_is_redacted_in_every_form(text, expected):
    assert one(text, name="Olivia Smith") == expected


def test_only_whole_words_of_the_rows_own_name_are_redacted():
    assert one("Smithson and Olivias and Smith-like", name="Olivia Smith") == "Smithson and Olivias and [name]-like"
    assert one("Hello, this is Olivia Smith.", name="Noah Brown") == "Hello, this is Olivia Smith."
    assert one("Mrs Smith", name=None) == "Mrs Smith"
    assert one("Hello Olivia", name="") == "Hello Olivia"
    assert one("Mr Lee, Mrs Anne-Marie O'Brien", name="Anne-Marie O'Brien") == "Mr Lee, [name]"
    assert one("Ms J. Lee called", name="J. Lee") == "[name] called"  # an initial alone is no name part


def test_names_are_matched_per_row():
    text = pd.Series(["Hi, Olivia Smith here.", "Hi, Olivia Smith here.", "Hi, Noah here."], index=[10, 11, 12])
    names = pd.Series(["Olivia Smith", "Noah Brown", None], index=[0, 1, 2])  # aligned by position
    out = redact_names(text, names)
    assert out.tolist() == ["Hi, [name] here.", "Hi, Olivia Smith here.", "Hi, Noah here."]
    assert list(out.index) == [10, 11, 12]
    with pytest.raises(ValueError, match="2 name\\(s\\) for 3 text row\\(s\\)"):
        redact_names(text, names.head(2))


def test_emails_go_before_names_so_an_address_is_not_half_replaced():
    assert one("write to olivia.smith12@example.com, Olivia", name="Olivia Smith") == "write to [email], [name]"
    assert redact_emails(pd.Series(["a@b.co"])).iloc[0] == "[email]"


def test_missing_text_stays_missing():
    out = redact_contact_details(pd.Series(["call 07700 900123, Ann Bell", None, None]), names=pd.Series(["Ann Bell", "Ann Bell", None]))
    assert out.iloc[0] == "call [phone], [name]"
    assert out.iloc[1:].isna().all()


def test_simulated_transcripts_keep_no_contact_detail_and_keep_every_reference():
    customers = simulate_customers(300, seed=11)
    policies = simulate_policies(customers, seed=11)
    claims = simulate_claims(policies, seed=11)
    conv = simulate_conversations(customers, policies, claims, seed=11)
    holder = customers.set_index("cust_no").loc[policies.set_index("contract_no").loc[conv["policy_no"], "cust_no"]]
    names = pd.Series((holder["first_nm"] + " " + holder["last_nm"]).to_numpy(), index=conv.index)
    out = redact_contact_details(conv["transcript"], names=names)
    raw = conv["transcript"]
    assert raw.str.contains(r"\(555\) 1\d\d-\d{4}").any() and raw.str.contains(r"0049 30 1\d{6}").any()  # the shapes are there
    assert raw.str.contains(r"\b(?:Mr|Mrs|Ms|Dr)\.? [A-Z]").any() and raw.str.contains("'s behalf").any()
    for i, text in out.items():
        assert "@" not in text, text
        assert not re.search(r"\d(?:[\s().-]{0,3}\d){8,}", text), text  # no run of 9+ digits: every phone went
        for part in names[i].split():
            assert not re.search(rf"\b{part}\b", text, re.IGNORECASE), (names[i], text)
        for ref in re.findall(r"(?:POL|CLM)-\d{7}|£[\d,]+\.\d\d|\d{4}-\d\d-\d\d", raw[i]):
            assert ref in text, (ref, text)  # ids, amounts and dates survive
