"""``python -m langchain_graylayer.cli``: the ``graylayer`` command."""

import sys

from langchain_graylayer.cli.main import main

sys.exit(main())
