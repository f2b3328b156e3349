#!/usr/bin/env bash
# Entrypoint of the grpolab image.
#   docker run IMAGE                 -> grpolab doctor
#   docker run IMAGE train --max_steps 10   (any grpolab command, or a flag like --version)
#                                    -> grpolab train --max_steps 10
#   docker run IMAGE bash            -> bash (anything else runs as given: python, accelerate, ...)
# exec replaces this shell, so signals (Ctrl-C, docker stop) reach the program itself.
set -euo pipefail

# Keep in sync with grpolab.cli.COMMANDS (a test checks it).
readonly GRPOLAB_COMMANDS=(data train sft eval chat merge serve doctor model probe)

if [[ $# -eq 0 ]]; then
  exec grpolab doctor
fi
for command in "${GRPOLAB_COMMANDS[@]}"; do
  if [[ "$1" == "${command}" ]]; then
    exec grpolab "$@"
  fi
done
if [[ "$1" == -* ]]; then
  exec grpolab "$@"
fi
exec "$@"
