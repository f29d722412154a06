"""How close a query sequence is to the nearest sequence a model was trained on: the usual
first question about a prediction (a model is most accurate on proteins like its training set;
below ~30% identity a fold is rarely recognisable from sequence alone).

identity(query, target) = identical residues in an optimal alignment / query length.
The alignment is global with end gaps free (a query that is a domain of a longer training chain,
or longer than it, is not penalised for the overhangs), scoring +1 for a match, 0 for a mismatch
and -3 per gap position: a count of identities, not BLOSUM62, because an identity is what is
reported. The gap cost keeps chance low: at -1 the aligner buys identities with gaps, and two
random 150-residue sequences come out ~22% identical; at -3, ~11%, the best of 5,000 random
ones ~15%, while a homolog made with 30% identity and 3% indels still scores 38%. Dividing by the query's length (not the shorter sequence's) means a 30-residue
fragment of a training chain does not make a 300-residue query "100% identical".

Thousands of training sequences: a prefilter ranks every target by the 2-mers it shares with
the query on nearly the same diagonal (FASTA's idea: a homolog at 30% identity shares ~L·0.09
2-mers along its alignment, two random sequences ~L/400 per diagonal), and only the best
`candidates` are aligned, all at once (numpy, one row of the dynamic programme per query residue,
vectorised over targets and their residues).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LOW_IDENTITY = 0.30
LOW_IDENTITY_NOTE = ("no training sequence above 30% identity: expect lower accuracy than on "
                     "training-like proteins")
_ALPHABET = "ACDEFGHIKLMNPQRSTVWY"
_OTHER, _PAD = 20, 21  # an unknown residue (matches nothing, not even itself); alignment padding
MATCH, GAP = 1, 3  # score of an identity; cost of each gap position
_BAND = 2  # diagonals either side pooled by the prefilter: short indels shift the diagonal


def encode(seq: str) -> np.ndarray:
    """Residue letters -> 0..19, anything else 20."""
    table = np.full(256, _OTHER, np.int8)
    for i, a in enumerate(_ALPHABET):
        table[ord(a)] = table[ord(a.lower())] = i
    return table[np.frombuffer(seq.encode("ascii", "replace"), np.uint8)]


def _dimers(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2-mer ids 0..399, their start positions) of the standard-residue pairs of codes."""
    pos = np.flatnonzero((codes[:-1] < 20) & (codes[1:] < 20))
    return codes[pos].astype(np.int32) * 20 + codes[pos + 1], pos


def aligned_identities(query: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Identities [T] of the best end-gap-free alignment of query codes [n] with each row of
    targets [T, m] (rows padded with _PAD, which matches nothing; a padded end acts as the free
    overhang it replaces). Among alignments of equal score, the one with the most identities."""
    n = len(query)
    T, m = targets.shape
    if n == 0 or m == 0:
        return np.zeros(T, np.int64)
    # One number per cell: score · (n + 1) + identities, so max() takes the higher score and, on
    # a tie, the more identities (identities never exceed n).
    scale = n + 1
    shift = np.arange(m + 1, dtype=np.int64) * GAP * scale
    prev = np.zeros((T, m + 1), np.int64)  # query[:0]: a free leading overhang of the target
    best_end = np.zeros(T, np.int64)  # the free trailing overhang of the query: any row's end
    for i in range(n):
        match = (targets == query[i]) & (query[i] < 20)
        row = np.empty_like(prev)
        row[:, 0] = 0  # query[:i + 1] against nothing yet: a free leading overhang
        row[:, 1:] = np.maximum(prev[:, :-1] + match * (MATCH * scale + 1),  # residue against residue
                                prev[:, 1:] - GAP * scale)  # query residue against a gap
        # Target residue against a gap: row[j] = max_k(row[k] - GAP·(j - k)), a running max.
        row = np.maximum.accumulate(row + shift, axis=1) - shift
        best_end = np.maximum(best_end, row[:, -1])
        prev = row
    best = np.maximum(best_end, prev.max(axis=1))  # or the target's trailing overhang
    return best % scale


class SequenceSet:
    """Named sequences (a model's training set) to find a query's nearest among."""

    def __init__(self, names: Sequence[str], sequences: Sequence[str], candidates: int = 48):
        if len(names) != len(sequences):
            raise ValueError(f"{len(names)} names for {len(sequences)} sequences")
        self.names, self.sequences, self.candidates = list(names), list(sequences), candidates
        self.codes = [encode(s) for s in self.sequences]
        ids, pos, owner = [], [], []
        for t, c in enumerate(self.codes):
            k, p = _dimers(c)
            ids.append(k), pos.append(p), owner.append(np.full(len(k), t, np.int64))
        order = np.argsort(np.concatenate(ids) if ids else np.zeros(0, np.int32), kind="stable")
        # Every 2-mer occurrence of every target, grouped by 2-mer id.
        self._ids = np.concatenate(ids)[order] if ids else np.zeros(0, np.int32)
        self._pos = np.concatenate(pos)[order] if pos else np.zeros(0, np.int64)
        self._owner = np.concatenate(owner)[order] if owner else np.zeros(0, np.int64)
        self._starts = np.searchsorted(self._ids, np.arange(401))
        self._max_len = max((len(c) for c in self.codes), default=0)

    def __len__(self) -> int:
        return len(self.sequences)

    def prefilter(self, query: np.ndarray) -> np.ndarray:
        """Per target: the most 2-mers shared with the query on 2·_BAND + 1 adjacent diagonals."""
        q_ids, q_pos = _dimers(query)
        starts, stops = self._starts[q_ids], self._starts[q_ids + 1]
        counts = stops - starts
        if counts.sum() == 0:
            return np.zeros(len(self), np.int64)
        # Every (query occurrence, target occurrence) pair of the same 2-mer.
        first = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        diag = np.repeat(q_pos, counts) - self._pos[first] + self._max_len  # 0 .. n + max_len
        width = len(query) + self._max_len + 1
        hist = np.bincount(self._owner[first] * width + diag, minlength=len(self) * width)
        hist = hist.reshape(len(self), width)
        pooled = np.cumsum(np.pad(hist, ((0, 0), (_BAND + 1, _BAND))), axis=1)
        pooled = pooled[:, 2 * _BAND + 1:] - pooled[:, :-2 * _BAND - 1]
        return pooled.max(axis=1)

    def nearest(self, sequence: str, over: str = "query") -> tuple[float, str | None]:
        """(identity to the nearest sequence, its name); (0.0, None) for an empty set.
        over='query': identical residues / query length (the reported identity); over='longer':
        / the longer of query and target, so that only the whole training sequence scores 1
        (a fragment of a training chain, or a training chain inside a longer query, does not:
        what a model that memorised its training chains whole reproduces)."""
        if over not in ("query", "longer"):
            raise ValueError(f"over must be 'query' or 'longer', got {over!r}")
        query = encode(sequence)
        if not len(self) or not len(query):
            return 0.0, None
        score = self.prefilter(query)
        top = np.argsort(-score, kind="stable")[:self.candidates]
        lengths = np.array([len(self.codes[t]) for t in top])
        targets = np.full((len(top), lengths.max()), _PAD, np.int8)
        for row, t in enumerate(top):
            targets[row, :lengths[row]] = self.codes[t]
        identities = aligned_identities(query, targets) / (
            len(query) if over == "query" else np.maximum(lengths, len(query)))
        k = int(np.argmax(identities))
        return float(identities[k]), self.names[int(top[k])]


def identity(query: str, target: str) -> float:
    """Identical aligned residues / query length (see the module's docstring)."""
    return SequenceSet(["target"], [target]).nearest(query)[0]
