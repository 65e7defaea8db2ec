import sys

from hosted_engine.cli.main import main

sys.exit(main())
