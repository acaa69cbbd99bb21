//! What arch code hands the core after a trap ([`Exit`]) and what the core answers
//! ([`Action`]). Arch code decodes hardware state into an `Exit`; it never knows what device
//! sits at an address. The core never touches a register.

use crate::addr::GuestPhysAddr;

/// Width of a guest access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessWidth {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits.
    Double,
}

impl AccessWidth {
    /// Bytes in one access.
    pub const fn bytes(self) -> u64 {
        match self {
            AccessWidth::Byte => 1,
            AccessWidth::Half => 2,
            AccessWidth::Word => 4,
            AccessWidth::Double => 8,
        }
    }

    /// All-ones mask of this width.
    pub const fn mask(self) -> u64 {
        match self {
            AccessWidth::Double => u64::MAX,
            other => (1u64 << (other.bytes() * 8)) - 1,
        }
    }
}

impl TryFrom<u64> for AccessWidth {
    type Error = u64;

    /// From a byte count (1, 2, 4, 8).
    fn try_from(bytes: u64) -> Result<Self, u64> {
        match bytes {
            1 => Ok(AccessWidth::Byte),
            2 => Ok(AccessWidth::Half),
            4 => Ok(AccessWidth::Word),
            8 => Ok(AccessWidth::Double),
            other => Err(other),
        }
    }
}

/// Why a vCPU left the guest, decoded by arch code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// A load from an address the partition's map does not back with memory.
    MmioRead {
        /// Guest-physical address of the access.
        address: GuestPhysAddr,
        /// Its width.
        width: AccessWidth,
        /// The architecture's syndrome, for reports.
        syndrome: u64,
    },
    /// A store to an address the partition's map does not back with memory.
    MmioWrite {
        /// Guest-physical address of the access.
        address: GuestPhysAddr,
        /// Its width.
        width: AccessWidth,
        /// The value stored (already truncated to the width).
        value: u64,
        /// The architecture's syndrome, for reports.
        syndrome: u64,
    },
    /// An x86 `in` from an I/O port.
    PortRead {
        /// The port.
        port: u16,
        /// Its width (byte, word or dword).
        width: AccessWidth,
    },
    /// An x86 `out` to an I/O port.
    PortWrite {
        /// The port.
        port: u16,
        /// Its width (byte, word or dword).
        width: AccessWidth,
        /// The value written (already truncated to the width).
        value: u64,
    },
    /// A hypervisor or firmware call (HVC, SMC, VMCALL): function number and arguments.
    Hypercall {
        /// Function identifier (x0 / rax).
        function: u64,
        /// Arguments (x1..x4).
        arguments: [u64; 4],
    },
    /// The guest waits for an interrupt (WFI/HLT).
    WaitForInterrupt,
    /// A physical interrupt took the CPU out of the guest (a kick, a maintenance interrupt):
    /// nothing to emulate, the guest resumes with what became pending.
    Interrupt,
    /// The guest's virtual timer fired (its physical interrupt stays active until the guest
    /// deactivates the virtual one).
    VirtualTimer,
    /// The guest asked its interrupt controller's CPU interface to send a software-generated
    /// interrupt to other vCPUs (GICv3 ICC_SGI1R_EL1 write).
    SendSoftwareInterrupt {
        /// The register value written.
        value: u64,
    },
    /// Something the hypervisor cannot emulate: an undecodable access, an unknown trap.
    GuestFault {
        /// What happened, named by arch code (an x86 exit reason); `None`: an unhandled guest
        /// exception.
        reason: Option<&'static str>,
        /// The architecture's syndrome value (ESR_EL2 / exit reason).
        syndrome: u64,
        /// The address involved, if any.
        address: Option<GuestPhysAddr>,
    },
}

/// What the core asks arch code to do with the vCPU that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Continue after the trapping instruction.
    Resume,
    /// Complete a load with this value, then continue.
    CompleteRead(u64),
    /// Return these values from a call (x0..x3), then continue.
    ReturnValues([u64; 4]),
    /// Wait until an interrupt is pending for this vCPU, then continue.
    Idle,
    /// A standby call (PSCI CPU_SUSPEND): return SUCCESS (x0 = 0) from it, then wait as
    /// [`Action::Idle`] does.
    Standby,
    /// Turn this vCPU off (PSCI CPU_OFF): park it until a CPU_ON starts it again.
    VcpuOff,
    /// Stop the whole partition; the core has recorded and printed why.
    StopPartition,
    /// Reload the partition and start it again from its entry (fault policy `restart`,
    /// or the guest asked for SYSTEM_RESET).
    RestartPartition,
}
