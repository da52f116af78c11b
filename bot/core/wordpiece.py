"""BERT's uncased WordPiece tokenizer in plain Python, read from the model's tokenizer.json.

Contract: :meth:`WordPiece.encode` gives the same token ids as the ``tokenizers`` library
for all-MiniLM-L6-v2's tokenizer.json (BertNormalizer: clean text, CJK characters apart,
lower case, accents stripped; BertPreTokenizer: split on whitespace and punctuation;
WordPiece with ``##`` continuations, ``[UNK]`` for words over 100 characters or with no
split; ``[CLS] ... [SEP]``, truncated to ``max_tokens``). tests/test_semantic.py checks
the equality on the whole example library when ``tokenizers`` happens to be installed.
Keeping this here spares the bot ``tokenizers`` and the Hugging Face hub client it pulls in.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs")


class WordPiece:
    def __init__(self, vocab: dict[str, int], unk: str = "[UNK]", prefix: str = "##",
                 max_word: int = 100) -> None:
        self.vocab = vocab
        self.unk_id = vocab[unk]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.prefix = prefix
        self.max_word = max_word
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: Path) -> WordPiece:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        model = data["model"]
        if model.get("type") != "WordPiece" or data.get("normalizer", {}).get("lowercase") is not True:
            raise ValueError(f"{path}: not an uncased WordPiece tokenizer")
        return cls(model["vocab"], model.get("unk_token", "[UNK]"),
                   model.get("continuing_subword_prefix", "##"), model.get("max_input_chars_per_word", 100))

    def _normalise(self, text: str) -> str:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if ch.isspace() or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = unicodedata.normalize("NFD", "".join(out).lower())
        return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for chunk in text.split():
            cur = ""
            for ch in chunk:
                if _is_punct(ch):
                    if cur:
                        words.append(cur)
                        cur = ""
                    words.append(ch)
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def _pieces(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        if len(word) > self.max_word:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                ids = [self.unk_id]
                break
            ids.append(found)
            start = end
        if len(self._cache) < 50_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str, max_tokens: int = 128) -> list[int]:
        """Token ids with [CLS] and [SEP], at most ``max_tokens`` long."""
        ids: list[int] = []
        budget = max_tokens - 2
        for word in self._words(self._normalise(text)):
            ids.extend(self._pieces(word))
            if len(ids) >= budget:
                break
        return [self.cls_id, *ids[:budget], self.sep_id]
