"""``fast_jit``: ``jax.jit`` with XLA options that compile 5-10x faster, for tests whose cost is
compilation (the programs still run in a fraction of a second): no backend optimisation, no
fusion emitters.  Options this XLA does not know are left out."""

import functools

import jax


def fast_compile_options() -> dict:
    for options in ({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
                    {"xla_backend_optimization_level": 0}):
        try:
            jax.jit(lambda x: x + 1, compiler_options=options)(0.0)
            return options
        except Exception:  # an option this XLA does not know ("No such compile option")
            continue
    return {}


FAST_COMPILE = fast_compile_options()
fast_jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)
