import sys

from meleewm_core.cli import main

sys.exit(main())
