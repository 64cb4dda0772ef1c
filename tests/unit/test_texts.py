"""The text store's pure parts: parts cut on UTF-8 boundaries, joined back only when whole, the
companion collection's name."""

from __future__ import annotations

import pytest
from tributary_workers.pipeline.texts import (
    MAX_NAME_LENGTH,
    TextStore,
    companion_name,
    join_parts,
    split_parts,
)
from tributary_workers.pipeline.writer import TEXT_MAX_LENGTH


@pytest.mark.parametrize("text", [
    "", "a", "plain ascii " * 10, "é" * 7, "日本語のテキスト" * 5, "🌊 river " * 9, "a🌊bé日c" * 11,
])
@pytest.mark.parametrize("max_bytes", [4, 5, 7, 16])
def test_parts_fit_never_split_a_character_and_join_back_exactly(text, max_bytes):
    parts = split_parts(text, max_bytes)
    assert "".join(parts) == text
    assert all(len(p.encode()) <= max_bytes for p in parts)
    assert all(p for p in parts) or parts == [""]
    # Each part is as long as it can be: the next character would not have fitted.
    for part, following in zip(parts, parts[1:]):
        assert len(part.encode()) + len(following[0].encode()) > max_bytes


def test_a_text_over_the_varchar_limit_splits_into_full_parts():
    text = ("x" * (TEXT_MAX_LENGTH - 1)) + "é" + "tail"  # the 2-byte character straddles the limit
    parts = split_parts(text)
    assert [len(p.encode()) for p in parts] == [TEXT_MAX_LENGTH - 1, 2 + 4]
    assert parts[1].startswith("é") and "".join(parts) == text
    assert split_parts("y" * TEXT_MAX_LENGTH) == ["y" * TEXT_MAX_LENGTH]


def test_a_part_must_hold_a_character():
    with pytest.raises(ValueError):
        split_parts("abc", 3)


def test_rows_number_their_parts_and_join_back_only_whole_and_of_the_right_content():
    text = "first part, second part, third"
    rows = [dict(r) for r in TextStore.rows("d", 7, "h1", text)]
    assert len(rows) == 1 and rows[0]["parts"] == 1 and rows[0]["vector"] == [0.0, 0.0]
    many = [{**r} for r in TextStore.rows("d", 7, "h1", "é" * 40000)]  # 80000 bytes: 2 parts
    assert [(r["part"], r["parts"]) for r in many] == [(0, 2), (1, 2)]
    assert len({r["pk"] for r in many}) == 2
    assert join_parts(list(reversed(many))) == "é" * 40000  # order of the answer does not matter
    assert join_parts(many, "h1") == "é" * 40000
    assert join_parts(many, "h2") is None  # another content
    assert join_parts(many[:1]) is None  # a part missing
    assert join_parts([]) is None
    stale = {**rows[0], "part": 2, "parts": 3}  # left by a longer text at the same version
    assert join_parts([*many, stale]) is None


def test_the_companion_name_fits_milvus_and_stays_apart_for_long_names():
    assert companion_name("docs_v2") == "docs_v2_texts"
    exact = "c" * (MAX_NAME_LENGTH - len("_texts"))
    assert companion_name(exact) == exact + "_texts"
    long_a, long_b = "a" * 250 + "_one", "a" * 250 + "_two"
    names = companion_name(long_a), companion_name(long_b)
    assert all(len(n) == MAX_NAME_LENGTH and n.endswith("_texts") for n in names)
    assert names[0] != names[1] and names[0] == companion_name(long_a)  # distinct, deterministic
