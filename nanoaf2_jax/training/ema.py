"""An exponential moving average of the weights, kept in the optimiser's state.

AlphaFold 2 samples with an EMA of its weights (decay 0.999; Jumper et al. 2021, supplement
1.11.7), as do most diffusion models: late in a run the raw weights still jump with each noisy
step, and their average is a better model than any one of them. Here the average is one more
optax transformation around the optimiser: its state holds the averaged weights, so the train
step keeps its signature (params, opt_state, batch, key), the checkpoint saves and restores the
average with the optimiser state (an exact resume), and data-parallel runs replicate it like
Adam's moments. Off (decay None) the optimiser is returned unchanged: the same program.

The average starts at the initial weights, so it needs no bias correction:
    ema_0 = params_0,   ema_t = decay · ema_{t-1} + (1 - decay) · params_t.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax


class EmaState(NamedTuple):
    inner: optax.OptState  # the wrapped optimiser's state
    params: optax.Params  # the averaged weights


def with_params_ema(optimizer: optax.GradientTransformation, decay: float | None) -> optax.GradientTransformation:
    """`optimizer`, also averaging the weights it produces (decay None or 0: unchanged)."""
    if not decay:
        return optimizer
    if not 0 < decay < 1:
        raise ValueError(f"ema decay must be in (0, 1), got {decay}")

    def init(params):
        # A copy, not the same buffers: the train step donates params and opt_state separately.
        return EmaState(optimizer.init(params), jax.tree_util.tree_map(lambda p: p.copy(), params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("the weights' EMA needs the parameters")
        updates, inner = optimizer.update(updates, state.inner, params)
        new_params = optax.apply_updates(params, updates)
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p.astype(e.dtype),
                                     state.params, new_params)
        return updates, EmaState(inner, ema)

    return optax.GradientTransformation(init, update)


def averaged_params(opt_state):
    """The EMA weights held in `opt_state`, or None when the optimiser keeps none."""
    return opt_state.params if isinstance(opt_state, EmaState) else None


def sampling_params(params, opt_state):
    """The weights to sample, evaluate and export with: the EMA when kept, else `params`."""
    ema = averaged_params(opt_state)
    return params if ema is None else ema
