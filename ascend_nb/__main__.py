import sys

from ascend_nb.cli import main

sys.exit(main())
