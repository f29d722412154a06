"""Which parameters a run trains (TrainConfig.trainable): all of them, or only the pLDDT head.

Confidence fine-tuning (docs/generalisation.md) trains the head of a model that already folds
and leaves everything else as it was: sampling never reads the head, so every structure the
model samples stays what it was. Frozen parameters get no optimiser state, no update and no
weight decay, and the step hands back their input arrays themselves (p + 0 would turn -0.0
into +0.0), so they stay bit-identical; their gradients are not computed (stop_gradient).
"""

from __future__ import annotations

import jax
import optax

TRAINABLE = ("all", "plddt_head")
# The top-level modules of each choice (model/alphafold2.py): the head of plddt_head='single'
# or of plddt_head='structure'.
_HEAD_MODULES = ("plddt_head", "confidence_head")


def is_trained(path: str, trainable: str) -> bool:
    """Whether the parameter under top-level module `path` is trained."""
    return trainable == "all" or path in _HEAD_MODULES


def trained_mask(params, trainable: str):
    """A tree of bools like `params`: True where the parameter is trained."""
    return {name: jax.tree_util.tree_map(lambda _: is_trained(name, trainable), sub)
            for name, sub in params.items()}


def restrict(optimizer: optax.GradientTransformation, trainable: str) -> optax.GradientTransformation:
    """`optimizer` on the trained parameters only; the frozen ones get zero updates and no state."""
    if trainable == "all":
        return optimizer
    labels = lambda params: jax.tree_util.tree_map(  # noqa: E731
        lambda trained: "trained" if trained else "frozen", trained_mask(params, trainable))
    return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()}, labels)


def detach_frozen(params, trainable: str):
    """params with stop_gradient on the frozen ones: their backward pass is not computed."""
    if trainable == "all":
        return params
    return {name: sub if is_trained(name, trainable) else jax.lax.stop_gradient(sub)
            for name, sub in params.items()}


def keep_frozen(new_params, old_params, trainable: str):
    """The updated trained parameters beside the frozen ones' own (unchanged) arrays."""
    if trainable == "all":
        return new_params
    return {name: new_params[name] if is_trained(name, trainable) else old_params[name]
            for name in new_params}
