"""TinyShakespeare, character-level: first 90% of the text for training, last 10% for testing (paper F.1)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .sources import WindowData
from .base import SOURCES, TaskData, require

TINYSHAKESPEARE_URL = SOURCES["tinyshakespeare"].url


class CharTokenizer:
    """Maps each distinct character of a text to an id, in sorted order (nanoGPT's shakespeare_char)."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def encode(self, s: str) -> torch.Tensor:
        unknown = sorted(set(s) - set(self.index))
        if unknown:
            raise ValueError(f"characters {unknown} are not in the vocabulary of {len(self.chars)} characters")
        return torch.tensor([self.index[c] for c in s], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def read_tinyshakespeare(root: Path) -> str:
    path = require(Path(root) / "tinyshakespeare.txt", "TinyShakespeare (tinyshakespeare.txt)",
                   "karpathy/char-rnn data/tinyshakespeare/input.txt (saved as tinyshakespeare.txt)",
                   url=TINYSHAKESPEARE_URL)
    return path.read_text(encoding="utf-8")


def char_task(text: str, block_size: int, train_fraction: float = 0.9, vocabulary: str | None = None) -> TaskData:
    """Split ``text`` into train/test token streams; ``vocabulary`` fixes the character set (default: text's)."""
    tok = CharTokenizer(vocabulary if vocabulary is not None else text)
    ids = tok.encode(text)
    n = int(train_fraction * len(ids))
    return TaskData(train=WindowData(ids[:n], block_size), test=WindowData(ids[n:], block_size),
                    num_classes=len(tok.chars), classes=tok.chars, extra={"tokenizer": tok})


def replace_whole_words(text: str, old: str, new: str) -> str:
    """``text`` with every whole word ``old`` (not inside a longer word; case as given) replaced by ``new``."""
    return re.sub(rf"(?<![A-Za-z]){re.escape(old)}(?![A-Za-z])", new, text)


def load_tinyshakespeare(root: Path, block_size: int = 256, max_chars: int | None = None,
                         replace: list | None = None, replace_words: list | None = None) -> TaskData:
    """TinyShakespeare; ``max_chars`` keeps only the start of the text (smoke runs), vocabulary unchanged.
    Section 4.5's adversarial teacher: ``replace`` is a list of ``[old, new]`` substring substitutions applied to
    the whole text first, ``replace_words`` the same for whole words only (the ``adversarial-replacement``
    reading: ``[["the", "tha"]]`` either way). The clean text is kept in ``extra["text"]``."""
    clean = read_tinyshakespeare(root)
    text = clean
    for old, new in replace or []:
        text = text.replace(old, new)
    for old, new in replace_words or []:
        text = replace_whole_words(text, old, new)
    task = char_task(text[:max_chars], block_size, vocabulary=clean)
    task.extra["text"] = text[:max_chars]
    return task
