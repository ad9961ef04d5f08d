"""`python -m cli ...`, what the local stack runs its services with."""

import sys

from cli.main import main

sys.exit(main())
