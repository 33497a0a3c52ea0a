"""BPE-dropout (Provilkov et al. 2020) over a sentencepiece BPE model, driven by a numpy generator.

Why not sentencepiece's own sampling (`enable_sampling=True`): its random generator is internal
and, in the installed version, gives different draws in different processes for the same
`set_random_generator_seed`, so a resumed run (or another DataLoader worker) would tokenize a
caption differently than the uninterrupted run did. Here every draw comes from the generator the
caller passes, seeded by (seed, stream position).

The merge rule is sentencepiece's: repeatedly merge the adjacent pair whose concatenation is the
highest-scoring piece (leftmost on ties); with dropout, each candidate merge is skipped with
probability p at every step, and segmentation of a word ends when no candidate survives. At p = 0
this reproduces sentencepiece's deterministic encoding (tested). Words holding pieces that are not
plain vocabulary (unknown characters, byte fallback, user-defined symbols) keep sentencepiece's segmentation:
sentencepiece cuts a user-defined symbol out of the text before any merge, so it is never built by merges nor
split by dropout.
"""
from __future__ import annotations

import numpy as np
import sentencepiece as spm

SPACE = "\u2581"


class BpeDropout:
    """BPE-dropout encoder for one sentencepiece model: the plain pieces and their merge scores, indexed once."""

    def __init__(self, sp: spm.SentencePieceProcessor):
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

        self.sp = sp
        # the piece types come from the proto: the installed sentencepiece has no is_user_defined
        pieces = model_pb2.ModelProto.FromString(sp.serialized_model_proto()).pieces
        self.pieces = {piece.piece: (i, piece.score) for i, piece in enumerate(pieces)
                       if piece.type == piece.NORMAL}
        """Plain vocabulary pieces (the only merge targets) -> (id, score)."""

    def segment(self, word: str, p: float, rng: np.random.Generator | None) -> list[str]:
        """BPE of one word (its characters merged by score), skipping each candidate merge with probability p."""
        symbols = list(word)
        while len(symbols) > 1:
            best, best_score = -1, -np.inf
            for i in range(len(symbols) - 1):
                found = self.pieces.get(symbols[i] + symbols[i + 1])
                if found is None or (p > 0.0 and rng.random() < p):
                    continue
                if found[1] > best_score:
                    best, best_score = i, found[1]
            if best < 0:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        return symbols

    def encode(self, text: str, p: float, rng: np.random.Generator | None) -> list[int]:
        """Ids of `text` with BPE-dropout probability p, every draw taken from `rng`."""
        ids: list[int] = []
        for word in words(self.sp.encode(text, out_type=str)):
            if all(piece in self.pieces for piece in word):
                ids += [self.pieces[piece][0] if piece in self.pieces else self.sp.unk_id()
                        for piece in self.segment("".join(word), p, rng)]
            else:
                ids += [self.sp.piece_to_id(piece) for piece in word]
        return ids


def words(pieces: list[str]) -> list[list[str]]:
    """Group sentencepiece pieces into words: a new word starts at each piece beginning with '▁'."""
    grouped: list[list[str]] = []
    for piece in pieces:
        if piece.startswith(SPACE) or not grouped:
            grouped.append([])
        grouped[-1].append(piece)
    return grouped
