"""Pure geometry: rigid frames as a pytree (compose, invert, apply, Rodrigues, frames <->
backbone) and residue constants. jax and the standard library's math only: no Flax, no I/O,
nothing else of the package."""
