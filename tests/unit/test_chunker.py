"""Chunking with the real tokenizer of the bundled model (loaded from disk, no model weights)."""

import pytest
from tributary_workers.documents import Document, DocumentError
from tributary_workers.pipeline.chunker import (
    Chunker,
    ChunkerConfig,
    ChunkingConfigError,
)
from tributary_workers.pipeline.embedder import default_model_path

MAX_SEQ = 256


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_path()))


def count(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def doc(text, doc_id="d.md", version=1):
    return Document(doc_id=doc_id, version=version, text=text)


PROSE = " ".join(
    f"Sentence {i} talks about rivers, tributaries and the sea, with punctuation; quotes \"here\"." for i in range(300)
)


def test_chunks_respect_max_tokens_and_cover_the_text(tokenizer):
    chunker = Chunker(ChunkerConfig(max_tokens=64, overlap_tokens=8), tokenizer, MAX_SEQ)
    chunks = chunker.run(doc(PROSE))
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.token_count == count(tokenizer, chunk.text) <= 64
    # every word of the document is in some chunk, in order
    joined = " ".join(c.text for c in chunks)
    assert "Sentence 0 " in joined and "Sentence 299 " in joined
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))


def test_neighbouring_chunks_overlap(tokenizer):
    chunks = Chunker(ChunkerConfig(max_tokens=40, overlap_tokens=10), tokenizer, MAX_SEQ).run(doc(PROSE))
    for left, right in zip(chunks, chunks[1:]):
        tail = left.text.split()[-2:]
        assert " ".join(tail) in right.text


def test_chunking_is_deterministic_and_ids_are_stable(tokenizer):
    chunker = Chunker(ChunkerConfig(max_tokens=50, overlap_tokens=5), tokenizer, MAX_SEQ)
    first = chunker.run(doc(PROSE))
    second = chunker.run(doc(PROSE))
    assert [(c.pk, c.text) for c in first] == [(c.pk, c.text) for c in second]
    assert len({c.pk for c in first}) == len(first)
    other_version = chunker.run(doc(PROSE, version=2))
    assert {c.pk for c in first}.isdisjoint(c.pk for c in other_version)


def test_default_is_the_models_limit_and_larger_is_refused(tokenizer):
    chunker = Chunker(ChunkerConfig(), tokenizer, MAX_SEQ)
    assert chunker.max_tokens == MAX_SEQ - 2  # [CLS] and [SEP]
    with pytest.raises(ChunkingConfigError, match="exceeds the model's limit of 254"):
        Chunker(ChunkerConfig(max_tokens=300), tokenizer, MAX_SEQ)
    with pytest.raises(ChunkingConfigError, match="overlap_tokens"):
        Chunker(ChunkerConfig(max_tokens=50, overlap_tokens=50), tokenizer, MAX_SEQ)


def test_long_unbroken_words_are_cut_within_the_limit(tokenizer):
    # No whitespace anywhere (so no word start to cut at), yet thousands of tokens.
    text = "-".join(f"abc{i}" for i in range(2000))
    chunks = Chunker(ChunkerConfig(max_tokens=32, overlap_tokens=4), tokenizer, MAX_SEQ).run(doc(text))
    assert len(chunks) > 5
    assert all(c.token_count <= 32 and count(tokenizer, c.text) <= 32 for c in chunks)


def test_text_without_tokens_is_a_document_failure(tokenizer):
    with pytest.raises(DocumentError, match="no tokens"):
        Chunker(ChunkerConfig(), tokenizer, MAX_SEQ).run(doc("   \n\t "))


def test_short_document_is_one_chunk(tokenizer):
    chunks = Chunker(ChunkerConfig(), tokenizer, MAX_SEQ).run(doc("Hello, rivers."))
    assert [c.text for c in chunks] == ["Hello, rivers."]
