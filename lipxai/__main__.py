import sys

from lipxai.cli import main

sys.exit(main())
