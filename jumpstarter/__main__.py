import sys

from jumpstarter.cli import main

sys.exit(main())
