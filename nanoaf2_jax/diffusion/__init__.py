"""Pure SE(3) = SO(3) x R(3) frame diffusion: IGSO3, the rotation and translation schedules,
forward marginals and reverse steps. jax.numpy only: no Flax, no I/O; imports only geometry/."""
