import sys

from earshot.load.cli import main

sys.exit(main())
