//! Encoding and decoding GIC list registers (GICv3 `ICH_LR<n>_EL2`, GICv2 `GICH_LR<n>`).
//! Pure: host-tested.

/// State of an interrupt in a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// Empty slot, or the guest handled the interrupt.
    Invalid,
    /// Pending.
    Pending,
    /// Active (acknowledged, not yet deactivated).
    Active,
    /// Active and pending again.
    PendingActive,
}

impl LrState {
    fn bits(self) -> u64 {
        match self {
            LrState::Invalid => 0,
            LrState::Pending => 1,
            LrState::Active => 2,
            LrState::PendingActive => 3,
        }
    }

    fn from_bits(bits: u64) -> LrState {
        match bits & 0b11 {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }
}

/// One list register's content, version-independent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListRegister {
    /// Virtual INTID.
    pub intid: u32,
    /// Priority (8-bit; GICv3 keeps the top bits the CPU implements, GICv2 the top 5).
    pub priority: u8,
    /// Group 1.
    pub group1: bool,
    /// State.
    pub state: LrState,
    /// Physical INTID deactivated with the virtual one (HW = 1).
    pub hardware: Option<u32>,
    /// GICv2 SGIs: the requesting CPU (CPUID field).
    pub source_cpu: u8,
}

impl ListRegister {
    /// GICv3 `ICH_LR<n>_EL2` value.
    pub fn to_v3(&self) -> u64 {
        let mut value =
            u64::from(self.intid) | (u64::from(self.priority) << 48) | (self.state.bits() << 62);
        if self.group1 {
            value |= 1 << 60;
        }
        if let Some(physical) = self.hardware {
            value |= (1 << 61) | ((u64::from(physical) & 0x1fff) << 32);
        }
        value
    }

    /// Decodes a GICv3 `ICH_LR<n>_EL2` value.
    pub fn from_v3(value: u64) -> ListRegister {
        let hardware = value & (1 << 61) != 0;
        ListRegister {
            intid: value as u32,
            priority: (value >> 48) as u8,
            group1: value & (1 << 60) != 0,
            state: LrState::from_bits(value >> 62),
            hardware: hardware.then_some(((value >> 32) & 0x1fff) as u32),
            source_cpu: 0,
        }
    }

    /// GICv2 `GICH_LR<n>` value.
    pub fn to_v2(&self) -> u32 {
        let mut value = (self.intid & 0x3ff)
            | ((u32::from(self.priority) >> 3) << 23)
            | ((self.state.bits() as u32) << 28);
        if self.group1 {
            value |= 1 << 30;
        }
        match self.hardware {
            Some(physical) => value |= (1 << 31) | ((physical & 0x3ff) << 10),
            None if self.intid < 16 => value |= u32::from(self.source_cpu & 0x7) << 10,
            None => {}
        }
        value
    }

    /// Decodes a GICv2 `GICH_LR<n>` value.
    pub fn from_v2(value: u32) -> ListRegister {
        let hardware = value & (1 << 31) != 0;
        let field = (value >> 10) & 0x3ff;
        ListRegister {
            intid: value & 0x3ff,
            priority: (((value >> 23) & 0x1f) << 3) as u8,
            group1: value & (1 << 30) != 0,
            state: LrState::from_bits(u64::from(value >> 28)),
            hardware: hardware.then_some(field),
            source_cpu: if hardware { 0 } else { (field & 0x7) as u8 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_round_trip() {
        let timer = ListRegister {
            intid: 27,
            priority: 0xa0,
            group1: true,
            state: LrState::Pending,
            hardware: Some(27),
            source_cpu: 0,
        };
        let value = timer.to_v3();
        assert_eq!(
            value,
            (1 << 62) | (1 << 61) | (1 << 60) | (0xa0 << 48) | (27 << 32) | 27
        );
        assert_eq!(ListRegister::from_v3(value), timer);
        let active = ListRegister::from_v3((2 << 62) | 40);
        assert_eq!(
            (active.intid, active.state, active.hardware),
            (40, LrState::Active, None)
        );
    }

    #[test]
    fn v2_round_trip() {
        let sgi = ListRegister {
            intid: 3,
            priority: 0x80,
            group1: false,
            state: LrState::Pending,
            hardware: None,
            source_cpu: 2,
        };
        assert_eq!(sgi.to_v2(), (1 << 28) | (0x10 << 23) | (2 << 10) | 3);
        assert_eq!(ListRegister::from_v2(sgi.to_v2()), sgi);
        let timer = ListRegister {
            intid: 27,
            hardware: Some(27),
            source_cpu: 0,
            ..sgi
        };
        assert_eq!(ListRegister::from_v2(timer.to_v2()), timer);
        assert_eq!(ListRegister::from_v2(0).state, LrState::Invalid);
    }
}
