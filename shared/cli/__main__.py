"""``python -m shared.cli``: the same as the ``sftpipe`` command."""

import sys

from shared.cli import main

sys.exit(main())
