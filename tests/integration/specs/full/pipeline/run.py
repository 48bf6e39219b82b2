import os
import sys

import six  # from PyPI, via packages.pip

print("run.py", six.__version__, os.environ["GREETING"], *sys.argv[1:])
