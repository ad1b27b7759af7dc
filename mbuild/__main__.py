import sys

from mbuild.cli import main

sys.exit(main())
