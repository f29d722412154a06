"""Identity of a query to the nearest training sequence: the alignment, the prefilter over
thousands of sequences, and the training_sequences.fasta a run carries."""

import numpy as np
import pytest

from nanoaf2_jax.data.sequence_identity import SequenceSet, identity
from nanoaf2_jax.training.training_sequences import (SEQUENCES_FILE, read_sequences, sequences_file_of,
                                                     training_set_of, write_sequences)

AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def random_sequence(rng, n):
    return "".join(rng.choice(AMINO, n))


def homolog(rng, seq, keep, indel=0.03):
    """Each residue kept with probability `keep` (else random), with deletions and insertions."""
    out = []
    for c in seq:
        if rng.random() < indel:
            continue
        out.append(c if rng.random() < keep else rng.choice(AMINO))
        if rng.random() < indel:
            out.append(rng.choice(AMINO))
    return "".join(out)


def test_identity_of_itself_a_point_mutant_a_fragment_and_a_shuffle():
    rng = np.random.default_rng(0)
    q = random_sequence(rng, 120)
    assert identity(q, q) == 1.0
    mutant = q[:50] + ("A" if q[50] != "A" else "C") + q[51:]
    assert identity(mutant, q) == pytest.approx(119 / 120)
    # End gaps are free and the query's length divides: a domain of a longer chain is 100%,
    # a query twice as long as a training chain at most 50%.
    assert identity(q[30:90], q) == 1.0
    assert identity(q, q[30:90]) == pytest.approx(0.5)
    shuffled = "".join(rng.permutation(list(q)))
    assert identity(shuffled, q) < 0.2
    # An internal insertion costs the gap, not the identities after it.
    assert identity(q[:60] + "WWW" + q[60:], q) == pytest.approx(120 / 123)
    assert identity("XXXX", "XXXX") == 0.0  # unknown residues match nothing


def test_nearest_of_thousands_finds_a_homolog_near_30_percent():
    rng = np.random.default_rng(1)
    query = random_sequence(rng, 150)
    seqs = [random_sequence(rng, int(n)) for n in rng.integers(40, 220, 3000)]
    names = [f"chain{i}" for i in range(len(seqs))]
    seqs[1717] = homolog(rng, query, keep=0.3)
    found, name = SequenceSet(names, seqs).nearest(query)
    assert name == "chain1717"
    assert found == pytest.approx(identity(query, seqs[1717])) and 0.3 <= found < 0.5
    # Without it, the best of 3,000 random sequences stays well below 30%.
    seqs[1717] = random_sequence(rng, 150)
    found, _ = SequenceSet(names, seqs).nearest(query)
    assert found < 0.22


def test_training_sequences_file_round_trip_and_lookup_from_any_checkpoint_path(tmp_path):
    run = tmp_path / "run"
    step = run / "checkpoints" / "12"
    step.mkdir(parents=True)
    (run / "final_model.npz").write_bytes(b"")
    assert sequences_file_of(run) is None and training_set_of(run) is None
    path = write_sequences(run, [("1ABC_A", "MKTAYIAKQRQ"), ("2XYZ_B", "GSHMLEDPVAAL")])
    assert path.name == SEQUENCES_FILE
    assert read_sequences(path) == (["1ABC_A", "2XYZ_B"], ["MKTAYIAKQRQ", "GSHMLEDPVAAL"])
    for where in (run, run / "checkpoints", step, run / "final_model.npz"):
        assert sequences_file_of(where) == path, where
    assert training_set_of(step).nearest("GSHMLEDPVAAL") == (1.0, "2XYZ_B")
    assert sequences_file_of(tmp_path) is None


def test_identity_over_the_longer_sequence_counts_only_a_whole_training_chain():
    rng = np.random.default_rng(3)
    trained = random_sequence(rng, 80)
    other = random_sequence(rng, 60)
    found = SequenceSet(["t", "o"], [trained, other])
    assert found.nearest(trained[:40]) == (1.0, "t")  # over the query: the fragment is "100%"
    assert found.nearest(trained[:40], over="longer") == (0.5, "t")
    assert found.nearest(trained + other[:20], over="longer") == (0.8, "t")  # a longer query
    assert found.nearest(trained, over="longer") == (1.0, "t")
    with pytest.raises(ValueError, match="over"):
        found.nearest(trained, over="target")
