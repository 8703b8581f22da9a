"""Command-line front ends: the drop-in ``clip_retrieval_knn`` and the ``percept`` subcommands."""
