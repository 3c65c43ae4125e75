import sys

from earshot.server.cli import main

sys.exit(main())
