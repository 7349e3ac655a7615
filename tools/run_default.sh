#!/bin/sh
# run_default.sh NEOX - what `make run` does: the best real thing available.
neox=${1:-build/neox}
set -e
"$neox" --version
"$neox" --help
