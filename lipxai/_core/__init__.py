"""Private machinery shared by several lipxai packages; the names inside are public.

``checks`` (validation at the API boundary, the NaN rule), ``batched`` (input checks, target
gradients and chunked reductions of the attribution methods and metrics), ``jaxpr`` (jaxpr
traversal and rewriting), ``xla_cpu`` (convolution rewrites and compile options for XLA:CPU),
``windows`` (the names and window conventions shared by ``nn`` and ``bounds``), ``margins``
(the classification margin ``f_y - max_{j != y} f_j``).
"""
