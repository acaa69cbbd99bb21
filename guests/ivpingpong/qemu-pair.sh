#!/usr/bin/env bash
# Runs ivpingpong on plain QEMU: two QEMU instances joined by `ivshmem-doorbell` through
# ivshmem-server.py, ivping (MSI-X) and ivpong (`-append "ivpong msix"`: QEMU's doorbell device
# signals only through MSI-X). GICv2 only: MSI-X goes to the GICv2m frame, QEMU 7.2's GICv3 has
# no GICD_SETSPI_NSR (it logs "invalid guest write at offset 0x40"). Both start orders, entered
# at EL1 and EL2. Usage: qemu-pair.sh [--no-build]. Ends with `N passed, N failed`.
set -uo pipefail

cd "$(dirname "$0")/.."
if [[ ${1:-} != --no-build ]] && ! build_log=$(./build-all.sh 2>&1); then
    printf '%s\n' "$build_log"
    exit 1
fi
image=target/images/ivpingpong.bin
work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null; rm -rf "$work"' EXIT

# Lines each side must print, in order (prefixes).
markers() {
    local side=$1 round
    if [[ $side == ivping ]]; then
        echo "ivping: doorbells through MSI-X vector 0 -> INTID 96"
        echo "ivping: ivpong is peer"
        for round in $(seq 1 10); do
            echo "ivping: sent $round (checksum"
            echo "ivping: got reply $round checksum ok"
        done
    else
        echo "ivpong: doorbells through MSI-X vector 0 -> INTID 96"
        for round in $(seq 1 10); do
            echo "ivpong: got $round checksum ok"
            echo "ivpong: replied $round (checksum"
        done
    fi
    echo PASS
}

check() {
    local side=$1 log=$2 next=0 marker
    mapfile -t lines < <(tr -d '\r' <"$log")
    while IFS= read -r marker; do
        while [[ $next -lt ${#lines[@]} && ${lines[next]} != "$marker"* ]]; do
            next=$((next + 1))
        done
        if [[ $next -ge ${#lines[@]} ]]; then
            echo "missing '$marker'"
            return 1
        fi
        next=$((next + 1))
    done < <(markers "$side")
}

run_side() {
    timeout 60 qemu-system-aarch64 -M "virt,$1" -cpu max -m 256M -nographic -monitor none \
        -serial stdio -chardev "socket,path=$work/sock,id=iv" \
        -device ivshmem-doorbell,chardev=iv,vectors=2 -kernel "$image" -append "$2" \
        </dev/null >"$3" 2>&1
}

# The guest's bootargs: the role, and for ivpong the switch to MSI-X.
args() { [[ $1 == ivpong ]] && echo "ivpong msix" || echo ivping; }

passed=0
failed=0
for machine in gic-version=2 gic-version=2,virtualization=on; do
    for first in ivpong ivping; do
        rm -f "$work/sock" "$work/shm"
        python3 ivpingpong/ivshmem-server.py "$work/sock" "$work/shm" 0x100000 2 >"$work/server.log" 2>&1 &
        server=$!
        for _ in $(seq 50); do [[ -S $work/sock ]] && break; sleep 0.1; done
        second=$([[ $first == ivpong ]] && echo ivping || echo ivpong)
        run_side "$machine" "$(args "$first")" "$work/$first.log" &
        one=$!
        sleep 1
        run_side "$machine" "$(args "$second")" "$work/$second.log" &
        two=$!
        wait "$one" "$two"
        kill "$server" 2>/dev/null
        wait "$server" 2>/dev/null
        problem=""
        for side in ivping ivpong; do
            if ! result=$(check "$side" "$work/$side.log"); then
                problem+="$side: $result; "
            fi
        done
        if [[ -z $problem ]]; then
            passed=$((passed + 1))
            echo "pass  ivpingpong virt,$machine ($first first)"
        else
            failed=$((failed + 1))
            echo "FAIL  ivpingpong virt,$machine ($first first): $problem"
            for side in ivping ivpong; do sed "s/^/      | /" "$work/$side.log"; done
        fi
    done
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
