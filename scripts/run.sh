#!/usr/bin/env bash
# Set up (idempotent), then run the assistant: the Discord bot when DISCORD_TOKEN is set,
# otherwise a conversation in this terminal on the offline default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/assistant run "$@"
