"""The pure token format: no database anywhere in this file."""

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tokens import credentials
from tokens.constants import SECRET_LENGTH, TOKEN_LENGTH, TOKEN_PREFIX

PEPPER_A = "a" * 40
PEPPER_B = "b" * 40


@pytest.fixture(autouse=True)
def peppers(settings):
    settings.TOKEN_PEPPERS = {"1": PEPPER_A}


def test_a_token_has_the_prefix_the_length_and_only_copy_safe_characters():
    value, parsed = credentials.generate()
    assert value.startswith(TOKEN_PREFIX) and len(value) == TOKEN_LENGTH
    assert re.fullmatch(r"bpt_[0-9A-Za-z]+", value)
    assert parsed.public_id in value and parsed.pepper_id == 1


def test_the_documented_scanner_pattern_matches_issued_tokens():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "tokens.md").read_text()
    pattern = re.search(r"```regex\n(.+?)\n```", doc).group(1)
    value, _ = credentials.generate()
    assert re.fullmatch(pattern, value)
    assert credentials.TOKEN_RE.pattern == pattern.replace(r"\b", "")


def test_tokens_are_unique_and_carry_at_least_160_bits_of_secret():
    values = {credentials.generate()[0] for _ in range(200)}
    assert len(values) == 200

    assert SECRET_LENGTH * math.log2(62) >= 160


def test_parse_accepts_an_issued_token_and_gives_the_stored_digest():
    value, issued = credentials.generate()
    assert credentials.parse(value) == issued
    assert credentials.matches(credentials.parse(value), issued.digest, issued.pepper_id)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # signature changed
        lambda v: v[:20] + ("A" if v[20] != "A" else "B") + v[21:],  # secret changed
        lambda v: "xyz_" + v[4:],  # prefix
        lambda v: v + "A",  # too long
        lambda v: v[:-1],  # too short
        lambda v: v.replace(v[10], "-", 1),  # character outside the alphabet
        lambda v: "",
    ],
)
def test_parse_rejects_malformed_and_forged_values(mangle):
    value, _ = credentials.generate()
    with pytest.raises(credentials.MalformedToken):
        credentials.parse(mangle(value))


@given(st.text(max_size=200))
@hsettings(max_examples=300, deadline=None)
def test_parse_never_accepts_arbitrary_text(text):
    with pytest.raises(credentials.MalformedToken):
        credentials.parse(text)


def test_the_digest_depends_on_the_pepper_and_is_not_the_value():
    value, parsed = credentials.generate()
    assert value not in parsed.digest and len(parsed.digest) == 64
    a = credentials.peppers()[0]
    assert credentials.digest(value, a) == parsed.digest


def test_rotating_the_pepper_keeps_old_tokens_valid_and_signs_new_ones_with_the_newest(settings):
    old_value, old = credentials.generate()
    settings.TOKEN_PEPPERS = {"1": PEPPER_A, "2": PEPPER_B}
    new_value, new = credentials.generate()
    assert new.pepper_id == 2
    assert credentials.parse(old_value) == old
    assert credentials.parse(new_value) == new
    settings.TOKEN_PEPPERS = {"2": PEPPER_B}  # pepper 1 retired: its tokens stop working
    with pytest.raises(credentials.MalformedToken):
        credentials.parse(old_value)


def test_a_token_signed_with_another_sites_pepper_is_rejected(settings):
    value, _ = credentials.generate()
    settings.TOKEN_PEPPERS = {"1": PEPPER_B}
    with pytest.raises(credentials.MalformedToken):
        credentials.parse(value)


def test_matches_refuses_the_right_digest_under_another_pepper_id():
    _value, parsed = credentials.generate()
    assert not credentials.matches(parsed, parsed.digest, 2)
    assert not credentials.matches(parsed, "0" * 64, 1)
