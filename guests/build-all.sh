#!/usr/bin/env bash
# Builds every Bulkhead test guest in release and writes the raw arm64 Images to
# target/images/NAME.bin. A guest is a directory here with src/main.rs; its binary is
# named after the directory. Extra arguments go to cargo (e.g. --locked, --offline).
set -euo pipefail

cd "$(dirname "$0")"
target=aarch64-unknown-none

cargo build --release --target "$target" "$@"

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
objcopy="$sysroot/lib/rustlib/$host/bin/llvm-objcopy"
if [[ ! -x $objcopy ]]; then
    objcopy=$(command -v llvm-objcopy || command -v rust-objcopy || true)
fi
if [[ -z $objcopy ]]; then
    echo "build-all.sh: no llvm-objcopy (rustup component add llvm-tools)" >&2
    exit 1
fi

mkdir -p target/images
for main in */src/main.rs; do
    name=${main%%/*}
    "$objcopy" -O binary "target/$target/release/$name" "target/images/$name.bin"
    echo "target/images/$name.bin ($(stat -c %s "target/images/$name.bin") bytes)"
done
