//! The virtual x2APIC of an x86_64 vCPU (pure logic, host-tested): its MSRs, IRR/ISR/TPR, EOI and the LVT timer counted from the TSC.

/// x2APIC and related MSRs the model answers.
pub mod msr {
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// First x2APIC register MSR.
    pub const FIRST: u32 = 0x800;
    /// Last x2APIC register MSR.
    pub const LAST: u32 = 0x8ff;
    /// Local APIC ID.
    pub const ID: u32 = 0x802;
    /// Version.
    pub const VERSION: u32 = 0x803;
    /// Task priority.
    pub const TPR: u32 = 0x808;
    /// Processor priority.
    pub const PPR: u32 = 0x80a;
    /// End of interrupt.
    pub const EOI: u32 = 0x80b;
    /// Logical destination.
    pub const LDR: u32 = 0x80d;
    /// Spurious-interrupt vector.
    pub const SVR: u32 = 0x80f;
    /// In-service register (8 MSRs).
    pub const ISR: u32 = 0x810;
    /// Trigger-mode register (8 MSRs).
    pub const TMR: u32 = 0x818;
    /// Interrupt-request register (8 MSRs).
    pub const IRR: u32 = 0x820;
    /// Error status.
    pub const ESR: u32 = 0x828;
    /// Interrupt command.
    pub const ICR: u32 = 0x830;
    /// LVT timer (then thermal, performance, LINT0, LINT1, error up to 0x837).
    pub const LVT_TIMER: u32 = 0x832;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x837;
    /// Timer initial count.
    pub const TMICT: u32 = 0x838;
    /// Timer current count.
    pub const TMCCT: u32 = 0x839;
    /// Timer divide configuration.
    pub const TDCR: u32 = 0x83e;
    /// Self IPI.
    pub const SELF_IPI: u32 = 0x83f;
}

/// IA32_APIC_BASE as the guest reads it: the usual base, enabled, x2APIC mode.
const APIC_BASE_VALUE: u64 = 0xfee0_0000 | (1 << 11) | (1 << 10);
/// Version 0x14, six LVT entries (max LVT index 5).
const VERSION_VALUE: u64 = 0x0005_0014;
const MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;

/// Whom an ICR write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// One x2APIC ID (= vCPU index in its partition).
    Apic(u32),
    /// The sender itself.
    Itself,
    /// Every vCPU of the partition, the sender included.
    AllIncludingSelf,
    /// Every vCPU of the partition but the sender.
    AllExcludingSelf,
}

/// What a WRMSR did beyond the model's own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Nothing more to do.
    Done,
    /// EOI ended the interrupt with this vector (the I/O APIC may wait for it: the EOI
    /// broadcast of a level-triggered interrupt).
    EndOfInterrupt(u8),
    /// A fixed IPI with `vector` to `destination` (a self IPI is already accepted).
    Ipi {
        /// The vector.
        vector: u8,
        /// Its destination.
        destination: Destination,
    },
}

/// One vCPU's virtual x2APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualX2apic {
    id: u32,
    tpr: u8,
    svr: u32,
    esr: u32,
    irr: [u64; 4],
    isr: [u64; 4],
    /// Timer, thermal, performance, LINT0, LINT1, error.
    lvt: [u32; 6],
    initial_count: u32,
    tdcr: u32,
    /// TSC value at which the timer next expires.
    deadline: Option<u64>,
}

fn bit(bits: &mut [u64; 4], vector: u8) -> (&mut u64, u64) {
    let mask = 1u64 << (vector & 63);
    let [a, b, c, d] = bits;
    let word = match vector >> 6 {
        0 => a,
        1 => b,
        2 => c,
        _ => d,
    };
    (word, mask)
}

fn highest(bits: &[u64; 4]) -> Option<u8> {
    bits.iter()
        .enumerate()
        .rev()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| (i as u8) * 64 + (63 - w.leading_zeros() as u8))
}

impl VirtualX2apic {
    /// The APIC of vCPU `id` after reset: software-disabled, every LVT masked.
    pub fn new(id: u32) -> VirtualX2apic {
        VirtualX2apic {
            id,
            tpr: 0,
            svr: 0xff,
            esr: 0,
            irr: [0; 4],
            isr: [0; 4],
            lvt: [MASKED; 6],
            initial_count: 0,
            tdcr: 0,
            deadline: None,
        }
    }

    /// TSC ticks per timer tick (TDCR bits 0, 1, 3).
    fn divisor(&self) -> u64 {
        let code = ((self.tdcr & 8) >> 1) | (self.tdcr & 3);
        if code == 7 { 1 } else { 2 << code }
    }

    fn period(&self) -> u64 {
        u64::from(self.initial_count).saturating_mul(self.divisor())
    }

    /// When the timer expires next (a TSC value), if it runs.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Makes `vector` pending (vectors below 16 are illegal and dropped).
    pub fn accept(&mut self, vector: u8) {
        if vector >= 16 {
            let (word, mask) = bit(&mut self.irr, vector);
            *word |= mask;
        }
    }

    /// Takes the requested vectors (IRR) out of the model (bit n of word w = vector 64w + n):
    /// with virtual-interrupt delivery they go on to the virtual-APIC page, whose IRR and ISR
    /// the CPU keeps.
    pub fn take_requests(&mut self) -> [u64; 4] {
        core::mem::take(&mut self.irr)
    }

    /// Lets the timer expire if the TSC reached its deadline: raises its vector (unless
    /// masked or the APIC is software-disabled), reloads a periodic timer.
    pub fn update(&mut self, now: u64) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        let [lvt, ..] = self.lvt;
        if lvt & MASKED == 0 && self.svr & SVR_ENABLE != 0 {
            self.accept(lvt as u8);
        }
        let periodic = (lvt >> 17) & 3 == 1;
        let period = self.period();
        self.deadline = if periodic && period != 0 {
            let next = deadline.saturating_add(period);
            Some(if next <= now {
                now.saturating_add(period)
            } else {
                next
            })
        } else {
            None
        };
    }

    fn processor_priority(&self) -> u8 {
        let in_service = highest(&self.isr).map_or(0, |v| v & 0xf0);
        self.tpr.max(in_service)
    }

    /// The vector to deliver now, if any: the highest requested one above the processor
    /// priority class.
    pub fn deliverable(&self) -> Option<u8> {
        let vector = highest(&self.irr)?;
        (vector >> 4 > self.processor_priority() >> 4).then_some(vector)
    }

    /// The vCPU took `vector`: it moves from IRR to ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        let (word, mask) = bit(&mut self.irr, vector);
        *word &= !mask;
        let (word, mask) = bit(&mut self.isr, vector);
        *word |= mask;
    }

    /// Ends the highest in-service interrupt; returns its vector.
    fn end_of_interrupt(&mut self) -> Option<u8> {
        let vector = highest(&self.isr)?;
        let (word, mask) = bit(&mut self.isr, vector);
        *word &= !mask;
        Some(vector)
    }

    fn current_count(&self, now: u64) -> u64 {
        match self.deadline {
            Some(deadline) if deadline > now => {
                ((deadline - now) / self.divisor()).min(u64::from(self.initial_count))
            }
            _ => 0,
        }
    }

    /// RDMSR of `msr` at TSC `now`; `None` for an MSR the model does not have.
    pub fn read(&self, msr: u32, now: u64) -> Option<u64> {
        let bank = |bits: &[u64; 4], base: u32| {
            let index = msr - base;
            let word = bits.get((index / 2) as usize).copied().unwrap_or(0);
            if index.is_multiple_of(2) {
                word & 0xffff_ffff
            } else {
                word >> 32
            }
        };
        Some(match msr {
            msr::APIC_BASE => APIC_BASE_VALUE | if self.id == 0 { 1 << 8 } else { 0 },
            msr::ID => u64::from(self.id),
            msr::VERSION => VERSION_VALUE,
            msr::TPR => u64::from(self.tpr),
            msr::PPR => u64::from(self.processor_priority()),
            msr::LDR => (u64::from(self.id >> 4) << 16) | (1 << (self.id & 15)),
            msr::SVR => u64::from(self.svr),
            0x810..=0x817 => bank(&self.isr, msr::ISR),
            0x818..=0x81f => 0,
            0x820..=0x827 => bank(&self.irr, msr::IRR),
            msr::ESR => u64::from(self.esr),
            msr::LVT_TIMER..=msr::LVT_ERROR => u64::from(
                self.lvt
                    .get((msr - msr::LVT_TIMER) as usize)
                    .copied()
                    .unwrap_or(MASKED),
            ),
            msr::TMICT => u64::from(self.initial_count),
            msr::TMCCT => self.current_count(now),
            msr::TDCR => u64::from(self.tdcr),
            _ => return None,
        })
    }

    /// WRMSR of `value` to `msr` at TSC `now`; `None` for an MSR or a value the model
    /// refuses (non-fixed or logical-destination IPIs, writes to read-only registers).
    pub fn write(&mut self, msr: u32, value: u64, now: u64) -> Option<Written> {
        let low = value as u32;
        match msr {
            // Enabled x2APIC mode is the only mode: writes keeping it are accepted.
            msr::APIC_BASE if value & (3 << 10) == 3 << 10 => {}
            msr::TPR => self.tpr = low as u8,
            msr::EOI => {
                if let Some(vector) = self.end_of_interrupt() {
                    return Some(Written::EndOfInterrupt(vector));
                }
            }
            msr::SVR => self.svr = low & 0x1ff,
            msr::ESR => self.esr = 0,
            msr::LVT_TIMER..=msr::LVT_ERROR => {
                let slot = self.lvt.get_mut((msr - msr::LVT_TIMER) as usize)?;
                *slot = low & 0x7_17ff;
            }
            msr::TMICT => {
                self.initial_count = low;
                let period = self.period();
                self.deadline = (low != 0).then(|| now.saturating_add(period));
            }
            msr::TDCR => self.tdcr = low & 0xb,
            msr::SELF_IPI => self.accept(low as u8),
            msr::ICR => return self.command(value),
            _ => return None,
        }
        Some(Written::Done)
    }

    fn command(&mut self, value: u64) -> Option<Written> {
        let vector = value as u8;
        let delivery_mode = (value >> 8) & 7;
        let logical = value & (1 << 11) != 0;
        if delivery_mode != 0 || logical {
            return None;
        }
        let destination = match (value >> 18) & 3 {
            0 if (value >> 32) as u32 == self.id => Destination::Itself,
            0 => Destination::Apic((value >> 32) as u32),
            1 => Destination::Itself,
            2 => Destination::AllIncludingSelf,
            _ => Destination::AllExcludingSelf,
        };
        if matches!(
            destination,
            Destination::Itself | Destination::AllIncludingSelf
        ) {
            self.accept(vector);
        }
        Some(Written::Ipi {
            vector,
            destination,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> VirtualX2apic {
        let mut apic = VirtualX2apic::new(1);
        apic.write(msr::SVR, 0x1ff, 0).unwrap();
        apic
    }

    #[test]
    fn identity_and_base() {
        let apic = VirtualX2apic::new(1);
        assert_eq!(apic.read(msr::ID, 0), Some(1));
        assert_eq!(apic.read(msr::APIC_BASE, 0), Some(0xfee0_0c00));
        assert_eq!(
            VirtualX2apic::new(0).read(msr::APIC_BASE, 0),
            Some(0xfee0_0d00)
        );
        assert_eq!(apic.read(msr::LDR, 0), Some(2));
        assert_eq!(apic.read(0x8ff, 0), None);
    }

    #[test]
    fn periodic_timer_fires_and_reloads() {
        let mut apic = enabled();
        apic.write(msr::TDCR, 0xb, 0).unwrap(); // divide by 1
        apic.write(msr::LVT_TIMER, (1 << 17) | 0x30, 0).unwrap();
        apic.write(msr::TMICT, 1000, 100).unwrap();
        assert_eq!(apic.read(msr::TMCCT, 600), Some(500));
        apic.update(1099);
        assert_eq!(apic.deliverable(), None);
        apic.update(1100);
        assert_eq!(apic.deliverable(), Some(0x30));
        assert_eq!(apic.deadline(), Some(2100));
        apic.acknowledge(0x30);
        assert_eq!(apic.deliverable(), None);
        assert_eq!(apic.read(msr::ISR + 1, 0), Some(1 << 16));
        assert_eq!(
            apic.write(msr::EOI, 0, 0),
            Some(Written::EndOfInterrupt(0x30))
        );
        assert_eq!(apic.read(msr::ISR + 1, 0), Some(0));
        // Nothing in service: an EOI does nothing.
        assert_eq!(apic.write(msr::EOI, 0, 0), Some(Written::Done));
    }

    #[test]
    fn one_shot_masked_and_divided() {
        let mut apic = enabled();
        apic.write(msr::TDCR, 0x3, 0).unwrap(); // divide by 16
        apic.write(msr::LVT_TIMER, 0x40 | MASKED as u64, 0).unwrap();
        apic.write(msr::TMICT, 10, 0).unwrap();
        assert_eq!(apic.deadline(), Some(160));
        apic.update(200);
        assert_eq!((apic.deliverable(), apic.deadline()), (None, None));
    }

    #[test]
    fn requests_are_taken_once() {
        let mut apic = enabled();
        apic.accept(0x41);
        apic.accept(0xc0);
        assert_eq!(apic.take_requests(), [0, 1 << 1, 0, 1]);
        assert_eq!(apic.take_requests(), [0; 4]);
        assert_eq!(apic.deliverable(), None);
    }

    #[test]
    fn priority_and_ipis() {
        let mut apic = enabled();
        apic.write(msr::TPR, 0x40, 0).unwrap();
        apic.accept(0x41);
        assert_eq!(apic.deliverable(), None);
        apic.accept(0x51);
        assert_eq!(apic.deliverable(), Some(0x51));
        assert_eq!(
            apic.write(msr::ICR, (3 << 32) | 0x60, 0),
            Some(Written::Ipi {
                vector: 0x60,
                destination: Destination::Apic(3)
            })
        );
        // To its own ID: accepted locally.
        apic.write(msr::ICR, (1 << 32) | 0x70, 0).unwrap();
        assert_eq!(apic.deliverable(), Some(0x70));
        // INIT and logical destinations are refused.
        assert_eq!(apic.write(msr::ICR, 0x500, 0), None);
        assert_eq!(apic.write(msr::ICR, 0x830, 0), None);
    }
}
