"""Pure SE(3) = SO(3) x R(3) frame diffusion: IGSO3, the rotation and translation schedules,
forward marginals and reverse steps. jax and math only: no Flax, no I/O; of the package it
imports only geometry/."""
