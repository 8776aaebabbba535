import sys

from shared.cli.tuning_service import main

sys.exit(main())
