import sys

from openseer.cli import main

sys.exit(main())
