import sys

from megadalle.cli import main

sys.exit(main())
