"""Command-line front ends: the drop-in ``clip_retrieval_knn`` and the ``percept`` subcommands.

Before anything loads numpy, OpenBLAS is asked to put its threads to sleep as soon as they have no work
(``OPENBLAS_THREAD_TIMEOUT``, unless the user set it): by default each spins for some 2^28 cycles after it starts
and after each product, taking a core from the searches' own threads. The searches run their products on one
BLAS thread each, so the wait costs nothing; a value the user sets is kept.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
