"""Evaluation: structure metrics (RMSD, TM-score, lDDT), plots, and scoring a checkpoint on
known structures. Imports everything below it (up to inference/), never reference/ or cli/."""
