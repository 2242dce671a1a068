#!/usr/bin/env bash
# Build llama.cpp's HTTP server (llama-server) once from the llama-cpp-python sdist's vendored source,
# and print the path of the cached binary. Used by `model.manage_server = true` (we start llama-server
# ourselves) and by the tests; a second call finds the cached binary and builds nothing.
# Needs cmake and a C++ compiler (apt-get install cmake g++); ~5-10 min on 2 cores the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
flavour=cpu
cmake_args=(-DGGML_NATIVE=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
            -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release)
if [ "${LLAMA_CUDA:-}" = 1 ] || { [ "${LLAMA_CUDA:-}" != 0 ] && command -v nvcc >/dev/null \
        && { command -v nvidia-smi >/dev/null || [ -e /proc/driver/nvidia/version ]; }; }; then
    flavour=cuda
    cmake_args+=(-DGGML_CUDA=ON)
fi
cpu_key=$( (grep -m1 '^flags' /proc/cpuinfo || uname -m) | sha256sum | cut -c1-12)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/local-voice-assistant/llama-server-$VERSION-$flavour-$cpu_key"
if [ -x "$cache/llama-server" ]; then
    echo "$cache/llama-server"
    exit 0
fi
command -v cmake >/dev/null && command -v c++ >/dev/null || {
    echo "error: building llama-server needs cmake and a C++ compiler (apt-get install cmake g++)" >&2; exit 3; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=.venv/bin/python
[ -x "$python" ] || python=python3
"$python" -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$VERSION" >&2
tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
echo "building llama-server $VERSION ($flavour) once into $cache ..." >&2
cmake -S "$src" -B "$work/build" "${cmake_args[@]}" >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log" >&2; exit 1; }
mkdir -p "$cache.partial"
cp "$work/build/bin/llama-server" "$cache.partial/"
rm -rf "$cache" && mv "$cache.partial" "$cache"
echo "$cache/llama-server"
