"""The JAX training example: ``python -m backends.jax.train``. A flax NNX ResNet and projector, optax,
augmentation on the device inside the jitted step, the loss from :mod:`vicreg.jax`, data-parallel with
``jax.shard_map`` over all devices."""
