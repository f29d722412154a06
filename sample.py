"""Predict protein backbone structures with a trained nanoaf2-jax model.

    python sample.py --checkpoint CKPT --sequence SEQ [--sequence SEQ ...] [--fasta FILE]
                     [--num-samples N] [--seed S] [--steps 100] [--out DIR] [--format pdb|cif]
                     [--native FILE[:CHAIN]] [--preset NAME] [--max-memory-gb GB] [--force]

See `python sample.py --help`; the command is nanoaf2_jax/cli/sample.py, the
machinery it drives nanoaf2_jax/inference/.
"""

import sys

from nanoaf2_jax.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
