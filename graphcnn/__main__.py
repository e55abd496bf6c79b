"""``python -m graphcnn`` runs the command line."""

import sys

from graphcnn.cli import main

sys.exit(main())
