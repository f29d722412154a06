"""The command lines of the package: argument parsing, and for sample.py the run that ties
inference and scoring together. The top of the dependency order: it may import any other
subpackage, and only the entry points (sample.py, python -m nanoaf2_jax.evaluate / .compare)
import it."""
