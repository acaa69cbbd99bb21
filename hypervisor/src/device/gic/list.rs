//! The list-register interface between the GIC model and arch code: entries and their states.
//!
//! [`ListEntries`] has a fixed capacity, so flushing needs no allocation.

/// Most list registers any GIC implements (ICH_VTR_EL2.ListRegs / GICH_VTR allow 16 and 64;
/// Arm's cores have 4); a flush never returns more.
pub const MAX_LIST_ENTRIES: usize = 16;

/// The state field of a list register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LrState {
    /// Empty: the guest acknowledged and deactivated it (or it was never loaded).
    #[default]
    Invalid,
    /// Pending: not yet acknowledged.
    Pending,
    /// Active: acknowledged, not yet deactivated.
    Active,
    /// Active, and pending again.
    PendingActive,
}

impl LrState {
    /// The state with these pending and active parts.
    pub const fn from_parts(pending: bool, active: bool) -> LrState {
        match (pending, active) {
            (false, false) => LrState::Invalid,
            (true, false) => LrState::Pending,
            (false, true) => LrState::Active,
            (true, true) => LrState::PendingActive,
        }
    }

    /// Whether the pending part is set.
    pub const fn is_pending(self) -> bool {
        matches!(self, LrState::Pending | LrState::PendingActive)
    }

    /// Whether the active part is set.
    pub const fn is_active(self) -> bool {
        matches!(self, LrState::Active | LrState::PendingActive)
    }
}

/// One list register's worth of virtual interrupt, arch-neutral.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Aligned to 8 (24 bytes): copied with two loads and stores, not a byte-wise memcpy.
#[repr(align(8))]
pub struct ListEntry {
    /// The virtual INTID (vINTID).
    pub intid: u32,
    /// Its priority as the guest configured it (lower is more urgent); arch code keeps the
    /// bits its list registers implement.
    pub priority: u8,
    /// Group 1 (true) or group 0.
    pub group1: bool,
    /// Pending / active state.
    pub state: LrState,
    /// For an interrupt linked to a physical one (HW=1): the physical INTID, whose active
    /// state the guest's deactivation clears.
    pub hardware: Option<u32>,
    /// GICv2 SGIs: the requesting vCPU (GICH_LR.CPUID); 0 otherwise.
    pub source_cpu: u8,
    /// Ask for a maintenance interrupt when the guest deactivates it (LR.EOI, HW=0 only):
    /// set for a level-sensitive interrupt whose line is high, so that arch code exits and
    /// the model can pend it again if the line is still asserted.
    pub notify_on_deactivate: bool,
}

impl ListEntry {
    /// An empty entry.
    pub const EMPTY: ListEntry = ListEntry {
        intid: 0,
        priority: 0,
        group1: false,
        state: LrState::Invalid,
        hardware: None,
        source_cpu: 0,
        notify_on_deactivate: false,
    };

    /// An entry as arch code reports it on fold: only `intid`, `state` and (GICv2 SGIs)
    /// `source_cpu` are read back.
    pub const fn reported(intid: u32, source_cpu: u8, state: LrState) -> ListEntry {
        ListEntry {
            intid,
            source_cpu,
            state,
            ..ListEntry::EMPTY
        }
    }
}

impl Default for ListEntry {
    fn default() -> Self {
        ListEntry::EMPTY
    }
}

/// What one flush hands arch code: up to [`MAX_LIST_ENTRIES`] entries, most urgent first
/// (active ones, then pending ones by priority, then by INTID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntries {
    entries: [ListEntry; MAX_LIST_ENTRIES],
    len: usize,
    more: bool,
    unchanged: bool,
}

impl ListEntries {
    /// An empty list.
    pub const fn new() -> ListEntries {
        ListEntries {
            entries: [ListEntry::EMPTY; MAX_LIST_ENTRIES],
            len: 0,
            more: false,
            unchanged: false,
        }
    }

    /// Whether the list registers hold exactly what they should already: arch code then
    /// writes nothing and keeps its underflow setting (the list is empty in that case).
    pub const fn is_unchanged(&self) -> bool {
        self.unchanged
    }

    /// Appends an entry; gives it back when the list is full.
    pub fn push(&mut self, entry: ListEntry) -> Result<(), ListEntry> {
        match self.entries.get_mut(self.len) {
            Some(slot) => {
                *slot = entry;
                self.len = self.len.saturating_add(1);
                Ok(())
            }
            None => Err(entry),
        }
    }

    /// Number of entries.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, in order.
    pub fn as_slice(&self) -> &[ListEntry] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// Iterates over the entries.
    pub fn iter(&self) -> core::slice::Iter<'_, ListEntry> {
        self.as_slice().iter()
    }

    /// Whether more interrupts were deliverable than the slots allowed: arch code should ask
    /// for an underflow maintenance interrupt (ICH_HCR_EL2.UIE / GICH_HCR.UIE) to come back
    /// for them once the list registers drain.
    pub const fn more_pending(&self) -> bool {
        self.more
    }

    /// Empties the list for reuse (no entries, no flags).
    pub fn clear(&mut self) {
        self.len = 0;
        self.more = false;
        self.unchanged = false;
    }

    /// Marks the list as "leave the list registers as they are".
    pub(super) fn set_unchanged(&mut self) {
        self.unchanged = true;
    }

    /// Records that interrupts were left out for lack of slots.
    pub(super) fn set_more_pending(&mut self) {
        self.more = true;
    }
}

impl Default for ListEntries {
    fn default() -> Self {
        ListEntries::new()
    }
}

impl<'a> IntoIterator for &'a ListEntries {
    type Item = &'a ListEntry;
    type IntoIter = core::slice::Iter<'a, ListEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_capacity_and_states() {
        let mut list = ListEntries::new();
        assert!(list.is_empty());
        for intid in 0..MAX_LIST_ENTRIES as u32 {
            assert!(
                list.push(ListEntry::reported(intid, 0, LrState::Pending))
                    .is_ok()
            );
        }
        assert_eq!(
            list.push(ListEntry::EMPTY),
            Err(ListEntry::EMPTY),
            "full list refuses"
        );
        assert_eq!(list.len(), MAX_LIST_ENTRIES);
        assert_eq!(list.iter().map(|e| e.intid).sum::<u32>(), 120);
        assert_eq!(LrState::from_parts(true, true), LrState::PendingActive);
        assert!(LrState::PendingActive.is_pending() && LrState::PendingActive.is_active());
        assert!(!LrState::Invalid.is_pending() && !LrState::Invalid.is_active());
    }
}
