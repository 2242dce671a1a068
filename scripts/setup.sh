#!/usr/bin/env bash
# Idempotent set-up: system packages, a Python 3.12 venv in .venv, the project with its extras,
# and the offline default models. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# 1. System packages: libopus for Discord voice (nextcord loads it by name); espeak-ng for the
#    speech evaluation set and its tests (voices other than Piper, generated at run time).
need_apt=()
ldconfig -p 2>/dev/null | grep -q 'libopus\.so\.0' || need_apt+=(libopus0)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${need_apt[*]} with apt-get"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        log "WARNING: please install ${need_apt[*]} (e.g. sudo apt-get install ${need_apt[*]}); voice and its tests need them"
    fi
fi

# 2. Python 3.12 (nextcord 3 and dave.py need exactly 3.12).
find_python() {
    for candidate in "${PYTHON:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python \
                     /root/.pyenv/versions/3.12*/bin/python /usr/bin/python3.12; do
        [ -n "$candidate" ] && [ -x "$(command -v "$candidate" 2>/dev/null || echo "$candidate")" ] || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    py=$(find_python) || { log "ERROR: Python 3.12 not found; install it (e.g. pyenv install 3.12) or set PYTHON=/path/to/python3.12"; exit 1; }
    log "creating .venv with $py"
    rm -rf .venv
    "$py" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi

# 3. The project and its dependencies (re-run only when pyproject.toml changes).
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || ! .venv/bin/python -c 'import assistant, finetune' 2>/dev/null; then
    log "installing the project and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install -q -e ".[dev]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# 4. Offline default models (LLM, whisper, Piper voice), verified by sha256.
.venv/bin/assistant models fetch
