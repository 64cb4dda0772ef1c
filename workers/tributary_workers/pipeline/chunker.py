"""Token-aware chunking with the embedding model's own tokenizer.

A chunk is never longer than the model can see: ``max_tokens`` is checked against the model's
maximum sequence length (minus the special tokens the model adds), and every chunk is re-counted
with the tokenizer after cutting, so nothing is silently truncated at embedding time.
Chunking is a pure function of (text, settings, tokenizer): the same document always yields the
same chunks, and so the same chunk primary keys.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tributary_workers.contract import defaults
from tributary_workers.documents import Chunk, Document, DocumentError
from tributary_workers.errors import PermanentError


class Tokenizer(Protocol):
    """The slice of a Hugging Face fast tokenizer the chunker uses."""

    def __call__(self, text, add_special_tokens: bool = ..., return_offsets_mapping: bool = ...): ...

    def num_special_tokens_to_add(self, pair: bool = False) -> int: ...


class ChunkingConfigError(PermanentError, ValueError):
    """Chunk settings the model cannot honour; fatal, reported before any document is read."""


@dataclass(frozen=True)
class ChunkerConfig:
    max_tokens: int | None = None  # None: as many as the model's maximum sequence length allows
    overlap_tokens: int = defaults.OVERLAP_TOKENS


class Chunker:
    def __init__(self, config: ChunkerConfig, tokenizer: Tokenizer, model_max_seq_length: int):
        self.tokenizer = tokenizer
        # HF fast tokenizers raise "Already borrowed" when one instance is called from several
        # threads at once; tokenising is cheap next to embedding, so a lock costs little.
        self._lock = threading.Lock()
        budget = model_max_seq_length - tokenizer.num_special_tokens_to_add()
        max_tokens = config.max_tokens if config.max_tokens is not None else budget
        if max_tokens < 1:
            raise ChunkingConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        if max_tokens > budget:
            raise ChunkingConfigError(
                f"max_tokens={max_tokens} exceeds the model's limit of {budget} tokens per chunk "
                f"(max sequence length {model_max_seq_length} minus special tokens); "
                "longer chunks would be truncated silently"
            )
        if not 0 <= config.overlap_tokens < max_tokens:
            raise ChunkingConfigError(
                f"overlap_tokens must be >= 0 and < max_tokens ({max_tokens}), got {config.overlap_tokens}"
            )
        self.max_tokens = max_tokens
        self.token_budget = budget  # the most tokens of one chunk the model reads without truncating
        self.overlap_tokens = config.overlap_tokens

    @classmethod
    def for_model_path(cls, model_path: str | Path, config: ChunkerConfig, max_seq_length: int) -> Chunker:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        # Whole documents are tokenised on purpose (to find cut points): silence the
        # "sequence longer than the model's maximum" warning that would otherwise follow.
        hf_logging.set_verbosity_error()
        return cls(config, AutoTokenizer.from_pretrained(str(model_path)), max_seq_length)

    def warm_up(self) -> None:
        self._count("warm up")

    def count_tokens(self, text: str) -> int:
        """Tokens of text without special tokens (what a chunk's token_count counts)."""
        return self._count(text)

    def _count(self, text: str) -> int:
        with self._lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def run(self, document: Document) -> list[Chunk]:
        text = document.text
        with self._lock:
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if not offsets:
            raise DocumentError("no tokens to embed (the document has no text)")
        return [
            Chunk(document.doc_id, document.version, index, text[start:end], token_count)
            for index, (start, end, token_count) in enumerate(self._spans(text, offsets))
        ]

    def _spans(self, text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        """(start, end, token count) of each chunk: token windows, ended at word starts if possible."""
        n = len(offsets)

        def starts_word(j: int) -> bool:
            # A gap (whitespace) before token j: cutting here never splits a word into sub-tokens,
            # so re-tokenising the chunk yields the same tokens.
            return j == 0 or j >= n or offsets[j][0] > offsets[j - 1][1]

        spans: list[tuple[int, int, int]] = []
        first = 0
        while first < n:
            end = min(first + self.max_tokens, n)
            if end < n:
                cut = end
                while cut > first + self.max_tokens // 2 and not starts_word(cut):
                    cut -= 1
                if starts_word(cut):
                    end = cut
            # Re-tokenising a cut can differ at the edges; shrink until it provably fits.
            while True:
                start_char, end_char = offsets[first][0], offsets[end - 1][1]
                count = self._count(text[start_char:end_char])
                if count <= self.max_tokens or end - first == 1:
                    break
                end -= 1
            spans.append((start_char, end_char, count))
            if end >= n:
                break
            following = max(end - self.overlap_tokens, first + 1)
            while following < end and not starts_word(following):
                following += 1
            first = following
        return spans
