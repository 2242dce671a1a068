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

# 4. llama.cpp in process (llama-cpp-python, MIT): there is no Python 3.12 wheel on the index, so its
#    sdist (which bundles llama.cpp) is built once (~6-11 min on 2 cores) with native CPU flags, and with
#    CUDA where nvcc and an NVIDIA driver are present (LLAMA_CUDA=1 forces it, LLAMA_CUDA=0 prevents it).
#    The wheel is kept in a cache outside the repository, keyed by version, flavour and CPU flags, so a
#    second set-up (or a fresh clone) installs it in seconds. A failed build does not stop set-up:
#    model.backend = "auto" then uses the transformers engine and logs why.
LLAMA_CPP_VERSION=0.3.36
if ! .venv/bin/python -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_VERSION')" 2>/dev/null; then
    flavour=cpu
    cmake_args="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
    if [ "${LLAMA_CUDA:-}" = 1 ] || { [ "${LLAMA_CUDA:-}" != 0 ] && command -v nvcc >/dev/null \
            && { command -v nvidia-smi >/dev/null || [ -e /proc/driver/nvidia/version ]; }; }; then
        flavour=cuda
        cmake_args="$cmake_args -DGGML_CUDA=ON"
    fi
    cpu_key=$( (grep -m1 '^flags' /proc/cpuinfo || uname -m) | sha256sum | cut -c1-12)
    wheels="${XDG_CACHE_HOME:-$HOME/.cache}/local-voice-assistant/wheels/llama-cpp-python-$LLAMA_CPP_VERSION-$flavour-$cpu_key"
    if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        if command -v cmake >/dev/null && command -v c++ >/dev/null; then
            log "building llama-cpp-python $LLAMA_CPP_VERSION ($flavour) once; first time ~6-11 min (log: $wheels.log)"
            mkdir -p "$(dirname "$wheels")"
            rm -rf "$wheels.partial"
            started=$(date +%s)
            if CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" .venv/bin/python -m pip wheel \
                    --no-deps -w "$wheels.partial" "llama-cpp-python==$LLAMA_CPP_VERSION" >"$wheels.log" 2>&1; then
                mv "$wheels.partial" "$wheels"
                log "llama-cpp-python built in $(( $(date +%s) - started )) s; cached in $wheels"
            else
                rm -rf "$wheels.partial"
                log "WARNING: building llama-cpp-python failed (see $wheels.log); the transformers engine is used instead"
            fi
        else
            log "WARNING: cmake and a C++ compiler are needed to build llama-cpp-python (apt-get install cmake g++);"
            log "         without it the transformers engine is used (slower on a CPU)"
        fi
    fi
    if ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        .venv/bin/python -m pip install -q "$wheels"/llama_cpp_python-*.whl \
            || log "WARNING: installing the llama-cpp-python wheel failed; the transformers engine is used instead"
    fi
fi

# 5. Offline default models (LLM, whisper, Piper voice), verified by sha256.
.venv/bin/assistant models fetch
