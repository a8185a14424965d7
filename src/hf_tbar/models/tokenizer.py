"""A small byte-level BPE tokenizer in CLIP's format, built offline from a text corpus.

The vocabulary holds every byte (with and without CLIP's ``</w>`` end-of-word marker), so any
text tokenizes; words seen in the corpus are merged into single tokens so prompts stay short.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from transformers import CLIPTokenizer

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
_WORD_PATTERN = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


def _byte_alphabet() -> list[str]:
    """One printable unicode character per byte value, in byte order (the GPT-2/CLIP convention)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    alphabet, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


def build_clip_tokenizer(corpus: Iterable[str], model_max_length: int = 32) -> CLIPTokenizer:
    """Build a :class:`~transformers.CLIPTokenizer` whose merges cover every word of ``corpus``.

    Args:
        corpus: Texts (class names, prompt templates) whose words should become single tokens.
            Matching is on lower-cased text, as CLIP lower-cases its input.
        model_max_length: Longest tokenized sequence, start and end tokens included.

    Returns:
        A tokenizer that also encodes unseen text, byte by byte.
    """
    alphabet = _byte_alphabet()
    vocab: list[str] = alphabet + [char + "</w>" for char in alphabet]
    known = set(vocab)
    merges: list[tuple[str, str]] = []
    seen_merges: set[tuple[str, str]] = set()
    words = sorted({w for text in corpus for w in _WORD_PATTERN.findall(text.lower())})
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pair[0] + pair[1]
            if pair not in seen_merges:
                seen_merges.add(pair)
                merges.append(pair)
            if merged not in known:
                known.add(merged)
                vocab.append(merged)
            pieces = [merged, *pieces[2:]]
    vocab += [START_TOKEN, END_TOKEN]
    return CLIPTokenizer(
        vocab={token: index for index, token in enumerate(vocab)},
        merges=merges,
        model_max_length=model_max_length,
    )
