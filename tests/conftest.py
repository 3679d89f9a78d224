import os

import jax

os.environ.setdefault("TFDS_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tfds"))
jax.config.update("jax_default_matmul_precision", "highest")
