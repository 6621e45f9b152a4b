"""``python -m langchain_graylayer.simulate``: the same as ``graylayer simulate``."""

import sys

from langchain_graylayer.simulate.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
