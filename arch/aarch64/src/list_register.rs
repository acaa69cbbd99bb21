//! Encoding the core's [`ListEntry`] into GIC list registers (GICv3 `ICH_LR<n>_EL2`, GICv2
//! `GICH_LR<n>`) and decoding them back. Pure: host-tested.

use hypervisor::device::gic::{ListEntry, LrState};

fn state_bits(state: LrState) -> u64 {
    match state {
        LrState::Invalid => 0,
        LrState::Pending => 1,
        LrState::Active => 2,
        LrState::PendingActive => 3,
    }
}

fn state_from_bits(bits: u64) -> LrState {
    match bits & 0b11 {
        0 => LrState::Invalid,
        1 => LrState::Pending,
        2 => LrState::Active,
        _ => LrState::PendingActive,
    }
}

/// GICv3 `ICH_LR<n>_EL2` value for `entry`.
pub fn to_v3(entry: &ListEntry) -> u64 {
    let mut value = u64::from(entry.intid)
        | (u64::from(entry.priority) << 48)
        | (state_bits(entry.state) << 62);
    if entry.group1 {
        value |= 1 << 60;
    }
    match entry.hardware {
        Some(physical) => value |= (1 << 61) | ((u64::from(physical) & 0x1fff) << 32),
        // EOI: maintenance interrupt when the guest deactivates it (bit 41, HW = 0 only).
        None if entry.notify_on_deactivate => value |= 1 << 41,
        None => {}
    }
    value
}

/// Decodes a GICv3 `ICH_LR<n>_EL2` value (what fold needs: INTID and state).
pub fn from_v3(value: u64) -> ListEntry {
    ListEntry::reported(value as u32, 0, state_from_bits(value >> 62))
}

/// GICv2 `GICH_LR<n>` value for `entry` (priority keeps its top 5 bits).
pub fn to_v2(entry: &ListEntry) -> u32 {
    let mut value = (entry.intid & 0x3ff)
        | ((u32::from(entry.priority) >> 3) << 23)
        | ((state_bits(entry.state) as u32) << 28);
    if entry.group1 {
        value |= 1 << 30;
    }
    match entry.hardware {
        Some(physical) => value |= (1 << 31) | ((physical & 0x3ff) << 10),
        None => {
            if entry.intid < 16 {
                value |= u32::from(entry.source_cpu & 0x7) << 10;
            }
            if entry.notify_on_deactivate {
                value |= 1 << 19;
            }
        }
    }
    value
}

/// Decodes a GICv2 `GICH_LR<n>` value.
pub fn from_v2(value: u32) -> ListEntry {
    let hardware = value & (1 << 31) != 0;
    let source_cpu = if hardware {
        0
    } else {
        ((value >> 10) & 0x7) as u8
    };
    ListEntry::reported(
        value & 0x3ff,
        source_cpu,
        state_from_bits(u64::from(value >> 28)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(intid: u32, state: LrState) -> ListEntry {
        ListEntry {
            intid,
            priority: 0xa0,
            group1: true,
            state,
            ..ListEntry::EMPTY
        }
    }

    #[test]
    fn v3_encoding() {
        let timer = ListEntry {
            hardware: Some(27),
            ..entry(27, LrState::Pending)
        };
        assert_eq!(
            to_v3(&timer),
            (1 << 62) | (1 << 61) | (1 << 60) | (0xa0 << 48) | (27 << 32) | 27
        );
        let level = ListEntry {
            notify_on_deactivate: true,
            ..entry(33, LrState::Pending)
        };
        assert_ne!(to_v3(&level) & (1 << 41), 0);
        assert_eq!(
            from_v3(to_v3(&entry(40, LrState::Active))),
            ListEntry::reported(40, 0, LrState::Active)
        );
        assert_eq!(from_v3(0).state, LrState::Invalid);
    }

    #[test]
    fn v2_encoding() {
        let sgi = ListEntry {
            source_cpu: 2,
            group1: false,
            priority: 0x80,
            ..entry(3, LrState::Pending)
        };
        assert_eq!(to_v2(&sgi), (1 << 28) | (0x10 << 23) | (2 << 10) | 3);
        assert_eq!(
            from_v2(to_v2(&sgi)),
            ListEntry::reported(3, 2, LrState::Pending)
        );
        let timer = ListEntry {
            hardware: Some(27),
            ..entry(27, LrState::PendingActive)
        };
        assert_eq!(
            from_v2(to_v2(&timer)),
            ListEntry::reported(27, 0, LrState::PendingActive)
        );
        let level = ListEntry {
            notify_on_deactivate: true,
            ..entry(33, LrState::Pending)
        };
        assert_ne!(to_v2(&level) & (1 << 19), 0);
    }
}
