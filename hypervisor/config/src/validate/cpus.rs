//! Physical CPUs: each vCPU gets exactly one, no CPU is given twice, pinned ones first.

use crate::error::{Errors, Location};
use crate::model::{Board, Vcpu};
use crate::vm::VmFile;

/// Gives every `cpu` line of every VM a physical CPU. `cpu runmask N` takes CPU N (which
/// must exist and be free); a plain `cpu` takes the lowest CPU no VM pins explicitly and no
/// earlier vCPU got, in file order. Returns one list per VM.
pub(crate) fn assign(board: &Board, vms: &[VmFile], errors: &mut Errors) -> Vec<Vec<Vcpu>> {
    let count = board.cpus.value;
    // Owner of each physical CPU: VM index and the `cpu` line.
    let mut owners: Vec<Option<(usize, &Location)>> =
        vec![None; usize::try_from(count).unwrap_or(0)];
    let mut result: Vec<Vec<Vcpu>> = vms
        .iter()
        .map(|vm| Vec::with_capacity(vm.cpus.len()))
        .collect();
    for (vm_index, vm) in vms.iter().enumerate() {
        for cpu in &vm.cpus {
            let Some(physical) = cpu.runmask else {
                continue;
            };
            let slot = usize::try_from(physical)
                .ok()
                .and_then(|index| owners.get_mut(index));
            match slot {
                None => {
                    let message = format!(
                        "physical CPU {physical} does not exist: the board has {count} CPUs (0-{})",
                        count.saturating_sub(1)
                    );
                    errors.push(&cpu.at, message);
                }
                Some(Some((owner, at))) => {
                    let owner = if *owner == vm_index {
                        "another vCPU of this VM".to_string()
                    } else {
                        let name = vms.get(*owner).map_or("", |vm| vm.name.value.as_str());
                        format!("VM `{name}`")
                    };
                    let message = format!(
                        "physical CPU {physical} is already given to {owner} ({at}); static \
                         partitioning gives each CPU to one vCPU"
                    );
                    errors.push(&cpu.at, message);
                }
                Some(slot @ None) => *slot = Some((vm_index, &cpu.at)),
            }
        }
    }
    for ((vm_index, vm), vcpus) in vms.iter().enumerate().zip(result.iter_mut()) {
        for cpu in &vm.cpus {
            let physical = match cpu.runmask {
                Some(physical) => Some(physical),
                None => {
                    let free = owners.iter().position(Option::is_none);
                    match free.and_then(|index| Some((index, owners.get_mut(index)?))) {
                        Some((index, slot)) => {
                            *slot = Some((vm_index, &cpu.at));
                            u32::try_from(index).ok()
                        }
                        None => {
                            let message = format!(
                                "no physical CPU left for this vCPU: all {count} CPUs of the \
                                 board are given out"
                            );
                            errors.push(&cpu.at, message);
                            None
                        }
                    }
                }
            };
            if let Some(physical_cpu) = physical {
                vcpus.push(Vcpu {
                    physical_cpu,
                    pinned: cpu.runmask.is_some(),
                    at: cpu.at.clone(),
                });
            }
        }
    }
    result
}
