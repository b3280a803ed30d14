import sys

from metadapt.cli import main

sys.exit(main())
