"""`python -m desktop`: start the ModelDeck desktop."""

import sys

from desktop.app import main

sys.exit(main())
