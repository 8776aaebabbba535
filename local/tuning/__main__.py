import sys

from local.tuning.cli import main

sys.exit(main())
