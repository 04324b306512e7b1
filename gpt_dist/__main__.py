import sys

from gpt_dist.cli import main

sys.exit(main())
