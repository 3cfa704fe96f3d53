"""Run the realism suite: the same as ``quasineuron realism``, kept for old command lines.

quasineuron realism --out docs/results/realism                 # digits, seeds 0 1 2
quasineuron realism --data mnist --data-dir DIR --max-train 10000 --epochs 5 --out DIR
"""

import sys

from quasineuron.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["realism", *sys.argv[1:]]))
