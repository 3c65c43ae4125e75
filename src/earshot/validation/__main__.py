import sys

from earshot.validation.cli import main

sys.exit(main())
