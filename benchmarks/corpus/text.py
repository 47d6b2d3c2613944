"""English sentences and a BERT WordPiece tokenizer, for the sentence encoders of the corpus.

Sentences: the Python reference manual that ships inside the standard library
(``pydoc_data.topics``), cut into sentences, filtered to plain prose (40-200
characters, no code punctuation), de-duplicated, in a fixed order: the same
list on every machine with the same Python minor version, no download.
``sentence_split(n_calibration, n_evaluation, seed)`` gives two disjoint
lists drawn from it by a seeded permutation.

Tokenizer: uncased BERT WordPiece from a ``vocab.txt`` (what Hugging Face's
BertTokenizer does with do_lower_case=True and the default strip_accents:
lower-case, strip accents, split on whitespace and punctuation, CJK characters
apart, then greedy longest-match word pieces with the ``##`` prefix, [UNK] for
a word with no split or longer than 100 characters), [CLS] ... [SEP], padded
with [PAD] to the longest sentence of the batch, attention mask 1 on tokens.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PLAIN = re.compile(r"^[A-Z][a-z]")
_CODE = re.compile(r"[=|_*`:{}\[\]<>]|\.\.\.|http")


@lru_cache(maxsize=1)
def reference_sentences() -> tuple:
    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", " ".join(topics[k] for k in sorted(topics)))
    found = (s.strip() for s in _SENTENCE_END.split(text))
    keep = (s for s in found if 40 < len(s) < 200 and _PLAIN.match(s) and not _CODE.search(s))
    return tuple(dict.fromkeys(keep))


def sentence_split(n_calibration: int, n_evaluation: int, seed: int = 0) -> tuple:
    """(calibration sentences, evaluation sentences): disjoint, drawn by a seeded permutation."""
    pool = reference_sentences()
    if n_calibration + n_evaluation > len(pool):
        raise ValueError(f"asked for {n_calibration} + {n_evaluation} sentences; the pool has {len(pool)}")
    order = np.random.default_rng(seed).permutation(len(pool))
    picked = [pool[i] for i in order[:n_calibration + n_evaluation]]
    return picked[:n_calibration], picked[n_calibration:]


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # BERT counts every non-alphanumeric ASCII as punctuation
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                             (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                             (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def basic_words(text: str) -> list:
    """Lower-cased, accent-stripped words and punctuation marks, as BERT's basic tokenizer."""
    text = "".join(" " if unicodedata.category(c).startswith("Z") or c in "\t\n\r" else c
                   for c in text if ord(c) not in (0, 0xFFFD) and not unicodedata.category(c).startswith("C")
                   or c in "\t\n\r")
    text = "".join(f" {c} " if _is_cjk(c) else c for c in text)
    words = []
    for token in text.lower().split():
        token = "".join(c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn")
        current = ""
        for c in token:
            if _is_punctuation(c):
                if current:
                    words.append(current)
                words.append(c)
                current = ""
            else:
                current += c
        if current:
            words.append(current)
    return words


class WordPiece:
    def __init__(self, vocab_path: str, max_length: int = 128):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.max_length = max_length
        self.unk, self.cls, self.sep, self.pad = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))

    def pieces(self, word: str) -> list:
        if len(word) > 100:
            return [self.unk]
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    out.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return out

    def ids(self, text: str) -> list:
        body = [i for w in basic_words(text) for i in self.pieces(w)][:self.max_length - 2]
        return [self.cls, *body, self.sep]

    def batch(self, texts) -> dict:
        """{input_ids, attention_mask, token_type_ids}: int64 [n, longest], padded with [PAD]."""
        rows = [self.ids(t) for t in texts]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
