#!/usr/bin/env bash
# Runs the test guests directly on QEMU virt (no hypervisor) with GICv3 and GICv2, entered at
# EL1 (PSCI via HVC) and at EL2 (virtualization=on: the runtime drops to EL1, PSCI via SMC),
# and checks each one's serial markers. Usage: qemu-test.sh [--no-build] [GUEST...]
# Prints one line per run and ends with `N passed, N failed`; exits non-zero on a failure.
set -uo pipefail

cd "$(dirname "$0")"
if [[ ${1:-} == --no-build ]]; then
    shift
else
    if ! build_log=$(./build-all.sh 2>&1); then
        printf '%s\n' "$build_log"
        exit 1
    fi
fi
guests=("$@")
[[ ${#guests[@]} -gt 0 ]] || guests=(hello ticks smp prober sysoff mmio)

# Lines each guest must print, in order (a prefix match on each line).
markers() {
    case $1 in
    hello) printf '%s\n' "hello: running at EL1" "hello: vcpu 0 mpidr 0x80000000" \
        "hello: ram 0x40000000 size 0x10000000 (256 MiB)" "hello: tick 1" "hello: tick 5" PASS ;;
    ticks) printf '%s\n' "ticks: interrupt 1" "ticks: interrupt 10" PASS ;;
    smp) printf '%s\n' "smp: CPU_ON of absent vcpu7 returned -2" "smp: CPU_ON of vcpu1 returned 0" \
        "smp: AFFINITY_INFO says vcpu1 is ON" "smp: vcpu1 got sgi 1" "smp: vcpu0 got reply 1" \
        "smp: vcpu1 got sgi 5" "smp: vcpu0 got reply 5" "smp: AFFINITY_INFO says vcpu1 is OFF" PASS ;;
    # Plain QEMU has no partition to stop: the read of unbacked memory (-m 256M) aborts.
    prober) printf '%s\n' "prober: reading its own RAM ok" \
        "prober: touching 0x70000000 outside its map" \
        "FAIL: synchronous exception (data abort): ESR_EL1 0x96000010 FAR_EL1 0x70000000" ;;
    sysoff) printf '%s\n' "sysoff: powering off early" ;;
    mmio) printf '%s\n' "mmio: stp ok" "mmio: 13 store forms wrote that line" \
        "mmio: pair loads ok" "mmio: sign-extending loads ok" "mmio: flag register reads ok" PASS ;;
    esac
}

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for guest in "${guests[@]}"; do
    for machine in gic-version=3 gic-version=2 gic-version=3,virtualization=on \
        gic-version=2,virtualization=on; do
        timeout 30 qemu-system-aarch64 -M "virt,$machine" -cpu max -smp 2 -m 256M \
            -nographic -monitor none -serial stdio -kernel "target/images/$guest.bin" \
            </dev/null >"$log" 2>&1
        status=$?
        problem=""
        [[ $status -eq 0 ]] || problem="QEMU exit status $status (124: timed out, no SYSTEM_OFF)"
        if [[ -z $problem ]]; then
            # Every marker in order, each the start of a line; nothing after the last one.
            mapfile -t lines < <(tr -d '\r' <"$log")
            next=0
            while IFS= read -r marker; do
                while [[ $next -lt ${#lines[@]} && ${lines[next]} != "$marker"* ]]; do
                    next=$((next + 1))
                done
                if [[ $next -ge ${#lines[@]} ]]; then
                    problem="missing '$marker'"
                    break
                fi
                next=$((next + 1))
            done < <(markers "$guest")
            if [[ -z $problem && $next -lt ${#lines[@]} ]]; then
                problem="unexpected output after the last marker: '${lines[next]}'"
            fi
        fi
        if [[ -z $problem ]]; then
            passed=$((passed + 1))
            echo "pass  $guest virt,$machine"
        else
            failed=$((failed + 1))
            echo "FAIL  $guest virt,$machine: $problem"
            sed 's/^/      | /' "$log"
        fi
    done
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
