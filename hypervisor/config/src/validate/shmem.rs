//! Shared-memory regions of the whole system: one size per name, and room for them in RAM.

use crate::error::{Errors, Location};
use crate::model::{Board, Region, Vdev};
use crate::numbers::format_size;

/// Collects the regions created at start-up (`create` host names and ivshmem names) across
/// all VMs, checks every creation of one name agrees on the size, and that they and the
/// `shmem-pool` fit in `free_bytes` of board RAM.
pub(crate) fn regions<'a>(
    board: &Board,
    vdevs: impl IntoIterator<Item = &'a Vdev>,
    free_bytes: u64,
    errors: &mut Errors,
) -> Vec<Region> {
    let mut regions: Vec<Region> = Vec::new();
    let pool = board.shmem_pool_size();
    let mut needed = pool;
    let mut room_reported = false;
    if let Some(pool_item) = &board.shmem_pool
        && pool > free_bytes
    {
        let message = format!(
            "shmem-pool of {} does not fit: only {} of board RAM is left after the VMs and the \
             hypervisor's reserve",
            format_size(pool),
            format_size(free_bytes)
        );
        errors.push(&pool_item.at, message);
        room_reported = true;
    }
    for (name, size, at) in creations(vdevs) {
        if let Some(first) = regions.iter().find(|region| region.name == name) {
            if first.size != size {
                let message = format!(
                    "region `{name}` is created here with size {}, but with size {} at {}",
                    format_size(size),
                    format_size(first.size),
                    first.at
                );
                errors.push(at, message);
            }
            continue;
        }
        needed = needed.saturating_add(size);
        if needed > free_bytes && !room_reported {
            let message = format!(
                "shared-memory regions created at start-up plus shmem-pool ({}) need {} by \
                 here, but only {} of board RAM is left after the VMs and the hypervisor's \
                 reserve",
                format_size(pool),
                format_size(needed),
                format_size(free_bytes)
            );
            errors.push(at, message);
            room_reported = true;
        }
        regions.push(Region {
            name: name.to_string(),
            size,
            at: at.clone(),
        });
    }
    regions
}

/// Every start-up creation: host name, size, where.
fn creations<'a>(
    vdevs: impl IntoIterator<Item = &'a Vdev>,
) -> impl Iterator<Item = (&'a str, u64, &'a Location)> {
    vdevs.into_iter().flat_map(|vdev| {
        let found: Vec<(&'a str, u64, &'a Location)> = match vdev {
            Vdev::Shmem(shmem) => shmem
                .creates
                .iter()
                .map(|create| (create.host_name.as_str(), create.size, &create.at))
                .collect(),
            Vdev::Ivshmem(ivshmem) => vec![(
                ivshmem.name.value.as_str(),
                ivshmem.size.value,
                &ivshmem.size.at,
            )],
            _ => Vec::new(),
        };
        found
    })
}
