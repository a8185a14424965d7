"""Captions of image-caption data: input checks, tokenization that says when it truncates, and which
captions name a class (so a triggered image is never pushed away from a caption that names the target)."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence

import torch

from ..data.embedded import TaskSpec
from ..errors import DataError
from ..zeroshot import encode_texts

logger = logging.getLogger(__name__)

__all__ = [
    "augment_caption",
    "check_captions",
    "index_captions",
    "names_class",
    "target_captions",
    "tokenize_captions",
]


def check_captions(captions: Sequence, what: str = "captions") -> list[str]:
    """The captions as a list of strings; a :class:`DataError` names the first row that is not a string
    or is empty (only white space)."""
    captions = list(captions)
    for row, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise DataError(f"{what}: row {row} is a {type(caption).__name__}, not a string: {caption!r}")
        if not caption.strip():
            raise DataError(f"{what}: row {row} is an empty caption ({caption!r})")
    return captions


def index_captions(captions: Sequence[str], first: Sequence[str] = ()) -> tuple[list[str], torch.Tensor]:
    """The texts to embed once, ``first`` (kept as given, so indices into it stay valid) then each distinct
    caption not among them, and the index ``(N,)`` of every caption in that list."""
    known = set(first)
    texts = [*first, *(c for c in dict.fromkeys(captions) if c not in known)]
    index: dict[str, int] = {}
    for i, text in enumerate(texts):
        index.setdefault(text, i)
    return texts, torch.tensor([index[c] for c in captions], dtype=torch.long)


def tokenize_captions(family, tokenizer, captions: Sequence[str], what: str = "captions") -> dict:
    """Token ids and mask ``(N, L)`` of ``captions`` for ``family``'s text tower; captions longer than the
    tokenizer's context (``model_max_length``, start and end tokens included) are truncated, with a warning
    that counts them and quotes the first."""
    limit = tokenizer.model_max_length
    lengths = [len(ids) for ids in tokenizer(list(captions), truncation=False)["input_ids"]]
    too_long = [row for row, length in enumerate(lengths) if length > limit]
    if too_long:
        first = too_long[0]
        logger.warning(
            "%s: %d caption(s) are longer than the tokenizer's context of %d tokens and were truncated "
            "(first: row %d, %d tokens: %r)",
            what,
            len(too_long),
            limit,
            first,
            lengths[first],
            captions[first][:80],
        )
    return family.tokenize(tokenizer, captions)


def augment_caption(caption: str, generator: random.Random) -> str:
    """An EDA-style text view (CleanCLIP's augmentation): one random word deleted or two swapped; a caption
    of one word is returned as it is."""
    words = caption.split()
    if len(words) < 2:
        return caption
    if generator.random() < 0.5:
        del words[generator.randrange(len(words))]
    else:
        i, j = generator.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def names_class(caption: str, classname: str) -> bool:
    """Whether ``caption`` contains ``classname`` as whole words (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(classname)}(?!\w)", caption, flags=re.IGNORECASE) is not None


def target_captions(task: TaskSpec, target: int, tokenizer, given: Sequence[str] | None = None) -> list[str]:
    """The captions a triggered image should match: ``given``, or the task's prompt templates filled with
    the target's class name ("a photo of a banana.").

    Raises:
        DataError: an empty caption, or one the tokenizer can only read as its unknown token (naming it).
    """
    captions = check_captions(
        given if given else [template.format(task.classnames[target]) for template in task.templates],
        "target captions",
    )
    unknown = tokenizer.unk_token
    for caption in captions:
        pieces = tokenizer.tokenize(caption)
        if unknown is not None and unknown in pieces:
            raise DataError(
                f"the target caption {caption!r} holds text the tokenizer does not know ({unknown!r} in "
                f"{pieces}): the model cannot have learnt it; check its spelling or give --target_captions"
            )
        for word in re.findall(r"\w+", caption):
            word_pieces = tokenizer.tokenize(word)
            if len(word) > 3 and len(word_pieces) == len(word):
                logger.warning(
                    "the tokenizer reads the word %r of the target caption %r letter by letter: the model has "
                    "probably never seen it; check its spelling",
                    word,
                    caption,
                )
    return captions


@torch.no_grad()
def embed_texts(model, tokens: dict, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised text embeddings ``(N, D)`` of tokenized texts, in batches, without gradients."""
    chunks = []
    ids, mask = tokens["input_ids"], tokens.get("attention_mask")
    for start in range(0, len(ids), batch_size):
        stop = start + batch_size
        chunks.append(
            encode_texts(
                model, ids[start:stop].to(device), None if mask is None else mask[start:stop].to(device)
            ).float()
        )
    return torch.cat(chunks)
