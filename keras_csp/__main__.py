"""``python -m keras_csp <command>``: the same as the ``keras-csp`` command."""

import sys

from keras_csp.cli import main

if __name__ == "__main__":
    sys.exit(main())
