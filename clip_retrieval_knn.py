#!/usr/bin/env python3
"""Run the drop-in ``clip_retrieval_knn`` from a checkout: ``python3 clip_retrieval_knn.py -g ... -M ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from percept.cli.dropin import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
