//! The QNX `vdev shmem` personality: the factory page (MMIO at `loc`, or a PCI function's BAR0) and the window where attached regions appear as a trapped control page followed by mapped data pages.
//!
//! Register maps as in DESIGN.md ("Guest-visible register maps"). Any width at any offset:
//! registers are byte images, unknown bytes read 0 and ignore writes. The device's state is
//! behind one lock, taken before the registry's.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

use super::policy::{self, Policy};
use super::registry::{RegionId, Registry};
use super::{NAME_FIELD_SIZE, Status, window};
use crate::addr::{GuestPhysAddr, PAGE_SIZE};
use crate::device::{ClientId, Effect, Effects, InterruptLines, MmioDevice, SignalTarget};
use crate::exit::AccessWidth;
use crate::guest_layout::SHMEM_WINDOW_SIZE;

/// What the factory page's signature register reads (QNX `GUEST_SHM_SIGNATURE`).
pub const SIGNATURE: u64 = 0x4d53_4732_474d_5651;

/// Factory page register offsets.
pub mod factory {
    /// u64 RO: [`super::SIGNATURE`].
    pub const SIGNATURE: u64 = 0x00;
    /// u64 RO: guest-physical address of the control page of the last created/found region.
    pub const SHMEM: u64 = 0x08;
    /// u32 RO: the interrupt the device signals on.
    pub const VECTOR: u64 = 0x10;
    /// u32 RO: [`crate::shmem::Status`] of the last request.
    pub const STATUS: u64 = 0x14;
    /// u32: pages; a write creates or attaches the region named at [`NAME`], a read gives
    /// the size of the last attached region.
    pub const SIZE: u64 = 0x18;
    /// 32 bytes: the region's name, NUL-terminated.
    pub const NAME: u64 = 0x1c;
    /// u32 WO: a write attaches to the region named at [`NAME`] only if it exists.
    pub const FIND: u64 = 0x3c;
    /// One past the last register.
    pub const END: u64 = 0x40;
}

/// Control page register offsets.
pub mod control {
    /// u32 RO: bits 0-15 clients that notified me since my last read (cleared by the read),
    /// bits 16-31 active clients.
    pub const STATUS: u64 = 0x0;
    /// u32 RO: my client index (0-15).
    pub const INDEX: u64 = 0x4;
    /// u32 WO: bitmask of clients to notify (`~0`: everyone but me).
    pub const NOTIFY: u64 = 0x8;
    /// u32 WO: any write detaches.
    pub const DETACH: u64 = 0xc;
    /// One past the last register.
    pub const END: u64 = 0x10;
}

/// How the device's interrupt reaches the partition's interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptKind {
    /// A level-sensitive line, asserted while any attached region has something unread for
    /// this client ([`Effect::SetLevel`] after every change; PCI INTx and GIC SPIs).
    Level,
    /// One edge per event that leaves something unread ([`Effect::Raise`]).
    Edge,
    /// The line belongs to someone else (the PCI bridge's INTx): after every change the
    /// device signals itself ([`Effect::Signal`] with its own client id), and the owner asks
    /// [`QnxShmem::interrupt_pending`].
    Delegated,
}

/// One attached region as this device shows it.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    region: RegionId,
    index: u8,
    /// Offset of the control page in the window; the data follows one page later.
    control: u64,
    /// Data bytes.
    size: u64,
}

impl Mapping {
    fn data(&self) -> u64 {
        self.control.saturating_add(PAGE_SIZE)
    }

    fn end(&self) -> u64 {
        self.data().saturating_add(self.size)
    }
}

/// A factory-page request.
#[derive(Clone, Copy)]
enum Request {
    /// `size` written: create with these pages, or attach.
    CreateOrAttach(u32),
    /// `find` written: attach only.
    Find,
}

struct State {
    policy: Policy,
    name: [u8; NAME_FIELD_SIZE],
    status: Status,
    shmem: u64,
    size: u32,
    /// Sorted by control page offset.
    mappings: Vec<Mapping>,
    kind: InterruptKind,
    masked: bool,
}

/// One QNX shmem device of one partition: a registry client with its own naming policy.
pub struct QnxShmem {
    client: ClientId,
    window_base: GuestPhysAddr,
    intid: u32,
    creates: Vec<(String, u64)>,
    registry: &'static Mutex<Registry>,
    state: Mutex<State>,
    /// Where a level-sensitive interrupt is set directly, under the state lock.
    lines: Option<Arc<dyn InterruptLines>>,
}

impl QnxShmem {
    /// A device that is registry client `client`, maps regions in its window at
    /// `window_base` (`SHMEM_WINDOWS + n * SHMEM_WINDOW_SIZE`) and interrupts on `intid`
    /// (level-sensitive; see [`QnxShmem::with_interrupt_kind`]). `creates` are its
    /// configuration's `create NAME,SIZE` (guest-visible names): the device does not attach
    /// them, [`QnxShmem::create_startup_regions`] can create them.
    pub fn new(
        policy: Policy,
        creates: &[(String, u64)],
        client: ClientId,
        window_base: GuestPhysAddr,
        intid: u32,
        registry: &'static Mutex<Registry>,
    ) -> QnxShmem {
        QnxShmem {
            client,
            window_base,
            intid,
            creates: creates.to_vec(),
            registry,
            state: Mutex::new(State {
                policy,
                name: [0; NAME_FIELD_SIZE],
                status: Status::Ok,
                shmem: 0,
                size: 0,
                mappings: Vec::new(),
                kind: InterruptKind::Level,
                masked: false,
            }),
            lines: None,
        }
    }

    /// The same device signalling with `kind`.
    pub fn with_interrupt_kind(self, kind: InterruptKind) -> QnxShmem {
        self.state.lock().kind = kind;
        self
    }

    /// Sets its level-sensitive line directly in `lines` (under its own lock, so concurrent
    /// updates from several CPUs reach the interrupt controller in order) instead of
    /// returning [`Effect::SetLevel`].
    pub fn with_lines(mut self, lines: Arc<dyn InterruptLines>) -> QnxShmem {
        self.lines = Some(lines);
        self
    }

    /// The registry the device attaches through (host tests carry out [`Effect::Scrub`] on it).
    #[cfg(test)]
    pub(crate) fn registry(&self) -> &'static Mutex<Registry> {
        self.registry
    }

    /// Its registry client id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The INTID it interrupts on (what the factory's vector register reads).
    pub fn intid(&self) -> u32 {
        self.intid
    }

    /// Guest-physical base of its window.
    pub fn window_base(&self) -> GuestPhysAddr {
        self.window_base
    }

    /// Creates the configuration's `create`s in the registry under their substituted host
    /// names (the restriction list does not apply to them). Stops at the first failure and
    /// says which guest-visible name failed.
    pub fn create_startup_regions(&self) -> Result<(), (String, Status)> {
        let state = self.state.lock();
        let mut registry = self.registry.lock();
        for (name, size) in &self.creates {
            let host = state
                .policy
                .substitute(name.as_bytes())
                .map_err(|status| (name.clone(), status))?;
            registry
                .create_at_startup(host.as_str(), *size)
                .map_err(|status| (name.clone(), status))?;
        }
        Ok(())
    }

    /// The factory page as an MMIO device (4 KiB).
    pub fn factory_page(self: &Arc<Self>) -> Box<dyn MmioDevice> {
        Box::new(FactoryPage(Arc::clone(self)))
    }

    /// The window as an MMIO device (`SHMEM_WINDOW_SIZE` bytes): control pages trap here,
    /// data pages are mapped; anything else reads 0 and ignores writes.
    pub fn window(self: &Arc<Self>) -> Box<dyn MmioDevice> {
        Box::new(Window(Arc::clone(self)))
    }

    /// A load from the factory page at `offset` (also a PCI BAR0 offset). No side effects.
    pub fn read_factory(&self, offset: u64, width: AccessWidth) -> u64 {
        let state = self.state.lock();
        let mut image = [0u8; factory::END as usize];
        put(&mut image, factory::SIGNATURE, &SIGNATURE.to_le_bytes());
        put(&mut image, factory::SHMEM, &state.shmem.to_le_bytes());
        put(&mut image, factory::VECTOR, &self.intid.to_le_bytes());
        put(
            &mut image,
            factory::STATUS,
            &state.status.code().to_le_bytes(),
        );
        put(&mut image, factory::SIZE, &state.size.to_le_bytes());
        put(&mut image, factory::NAME, &state.name);
        extract(&image, offset, width)
    }

    /// A store to the factory page at `offset`: name bytes are stored; a store that touches
    /// `size` creates or attaches, one that touches `find` finds (after the name bytes of
    /// the same store are in).
    pub fn write_factory(
        &self,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        let mut state = self.state.lock();
        let mut size = [0u8; 4];
        let mut size_written = false;
        let mut find_written = false;
        for (at, byte) in bytes_of(offset, width, value) {
            if let Some(slot) =
                field(at, factory::NAME, NAME_FIELD_SIZE as u64).and_then(|i| state.name.get_mut(i))
            {
                *slot = byte;
            } else if let Some(slot) = field(at, factory::SIZE, 4).and_then(|i| size.get_mut(i)) {
                *slot = byte;
                size_written = true;
            } else if field(at, factory::FIND, 4).is_some() {
                find_written = true;
            }
        }
        let request = if size_written {
            Request::CreateOrAttach(u32::from_le_bytes(size))
        } else if find_written {
            Request::Find
        } else {
            return;
        };
        let mut registry = self.registry.lock();
        self.prune(&mut state, &registry, effects);
        match self.attach(&mut state, &mut registry, request, effects) {
            Ok(mapping) => {
                state.status = Status::Ok;
                state.shmem = self
                    .window_base
                    .checked_add(mapping.control)
                    .map_or(0, GuestPhysAddr::as_u64);
                state.size = u32::try_from(mapping.size / PAGE_SIZE).unwrap_or(u32::MAX);
            }
            Err(status) => {
                state.status = status;
                state.shmem = 0;
                state.size = 0;
            }
        }
        self.update_interrupt(&state, &registry, false, effects);
    }

    /// A load from the window at `offset`: control page registers (reading status takes it
    /// and updates the interrupt), 0 elsewhere.
    /// Whether `offset` in the window lies in the control page of an attached region.
    pub fn is_control_page(&self, offset: u64) -> bool {
        let state = self.state.lock();
        control_page(&state, offset).is_some()
    }

    pub fn read_window(&self, offset: u64, width: AccessWidth, effects: &mut Effects) -> u64 {
        let mut state = self.state.lock();
        let mut registry = self.registry.lock();
        self.prune(&mut state, &registry, effects);
        let Some((mapping, register)) = control_page(&state, offset) else {
            return 0;
        };
        // The aligned 32-bit reads guests make, answered directly.
        if width == AccessWidth::Word {
            match register {
                control::STATUS => {
                    let status = registry.take_status(mapping.region, mapping.index);
                    self.update_interrupt(&state, &registry, true, effects);
                    return u64::from(status);
                }
                control::INDEX => return u64::from(mapping.index),
                _ => {}
            }
        }
        let mut image = [0u8; control::END as usize];
        if register < control::STATUS + 4 {
            let status = registry.take_status(mapping.region, mapping.index);
            put(&mut image, control::STATUS, &status.to_le_bytes());
            self.update_interrupt(&state, &registry, true, effects);
        }
        put(
            &mut image,
            control::INDEX,
            &u32::from(mapping.index).to_le_bytes(),
        );
        extract(&image, register, width)
    }

    /// A store to the window at `offset`: notify and detach on control pages, ignored
    /// elsewhere.
    pub fn write_window(&self, offset: u64, width: AccessWidth, value: u64, effects: &mut Effects) {
        let mut state = self.state.lock();
        let mut registry = self.registry.lock();
        let pruned = self.prune(&mut state, &registry, effects);
        let Some((mapping, register)) = control_page(&state, offset) else {
            if pruned {
                self.update_interrupt(&state, &registry, false, effects);
            }
            return;
        };
        // The aligned 32-bit notify guests make, decoded directly.
        if width == AccessWidth::Word && register == control::NOTIFY {
            registry.notify_into(mapping.region, mapping.index, value as u32, effects);
            // A notify never targets the sender, so its own interrupt only changes if a
            // stale mapping went.
            if pruned {
                self.update_interrupt(&state, &registry, false, effects);
            }
            return;
        }
        let mut mask = [0u8; 4];
        let mut notify = false;
        let mut detach = false;
        for (at, byte) in bytes_of(register, width, value) {
            if let Some(slot) = field(at, control::NOTIFY, 4).and_then(|i| mask.get_mut(i)) {
                *slot = byte;
                notify = true;
            } else if field(at, control::DETACH, 4).is_some() {
                detach = true;
            }
        }
        if notify {
            registry
                .notify(mapping.region, mapping.index, u32::from_le_bytes(mask))
                .push_effects(effects);
        }
        if detach {
            state.mappings.retain(|m| m.region != mapping.region);
            registry
                .detach(mapping.region, mapping.index)
                .push_effects(effects);
            self.unmap(&mapping, effects);
            scrub_after(&registry, self.client.partition, effects);
        }
        self.update_interrupt(&state, &registry, false, effects);
    }

    /// Detaches every region and clears the factory registers (the partition restarts).
    pub fn reset(&self, effects: &mut Effects) {
        let mut state = self.state.lock();
        let mut registry = self.registry.lock();
        for mapping in core::mem::take(&mut state.mappings) {
            if registry.holder(mapping.region, mapping.index) == Some(self.client) {
                registry
                    .detach(mapping.region, mapping.index)
                    .push_effects(effects);
            }
            self.unmap(&mapping, effects);
        }
        scrub_after(&registry, self.client.partition, effects);
        state.name = [0; NAME_FIELD_SIZE];
        state.status = Status::Ok;
        state.shmem = 0;
        state.size = 0;
        state.masked = false;
        self.update_interrupt(&state, &registry, false, effects);
    }

    /// Whether any attached region has something unread for this client (the interrupt's
    /// level before masking; PCI status bit 3).
    pub fn interrupt_pending(&self) -> bool {
        let state = self.state.lock();
        let registry = self.registry.lock();
        pending(&state, &registry)
    }

    /// Masks or unmasks the interrupt (PCI command bit 10, INTx Disable) and updates it.
    pub fn set_interrupt_masked(&self, masked: bool, effects: &mut Effects) {
        let mut state = self.state.lock();
        let registry = self.registry.lock();
        state.masked = masked;
        self.prune(&mut state, &registry, effects);
        self.update_interrupt(&state, &registry, true, effects);
    }

    /// Resolves the name, attaches in the registry and places the region in the window.
    fn attach(
        &self,
        state: &mut State,
        registry: &mut Registry,
        request: Request,
        effects: &mut Effects,
    ) -> Result<Mapping, Status> {
        let name = policy::name_in_field(&state.name)?;
        let host = state.policy.resolve(name)?;
        let attachment = match request {
            Request::CreateOrAttach(pages) => registry.attach(host.as_str(), pages, self.client)?,
            Request::Find => registry.find(host.as_str(), self.client)?,
        };
        if let Some(mapping) = state
            .mappings
            .iter()
            .find(|mapping| mapping.region == attachment.region)
        {
            return Ok(*mapping);
        }
        let occupied = state.mappings.iter().map(|m| (m.control, m.end()));
        let placed =
            window::place(occupied, attachment.size, SHMEM_WINDOW_SIZE).and_then(|control| {
                let data = self
                    .window_base
                    .checked_add(control.checked_add(PAGE_SIZE)?)?;
                data.checked_add(attachment.size)?;
                Some((control, data))
            });
        let Some((control, data)) = placed else {
            registry
                .detach(attachment.region, attachment.index)
                .push_effects(effects);
            scrub_after(registry, self.client.partition, effects);
            return Err(Status::NoMemory);
        };
        let mapping = Mapping {
            region: attachment.region,
            index: attachment.index,
            control,
            size: attachment.size,
        };
        let at = state.mappings.partition_point(|m| m.control < control);
        state.mappings.insert(at, mapping);
        effects.push(Effect::MapMemory {
            guest: data,
            host: attachment.base,
            size: attachment.size,
        });
        registry
            .announce(attachment.region, attachment.index)
            .push_effects(effects);
        Ok(mapping)
    }

    /// Drops mappings whose registry slot is no longer this client's (the system detached
    /// the partition behind the device's back, [`Registry::detach_all`]).
    /// Drops the mappings of regions this client no longer holds; returns whether any went
    /// (the client's pending state may have changed then).
    fn prune(&self, state: &mut State, registry: &Registry, effects: &mut Effects) -> bool {
        // The usual case, checked without building anything: every mapping still valid.
        if state
            .mappings
            .iter()
            .all(|mapping| registry.holder(mapping.region, mapping.index) == Some(self.client))
        {
            return false;
        }
        let mut stale = Vec::new();
        state.mappings.retain(|mapping| {
            let valid = registry.holder(mapping.region, mapping.index) == Some(self.client);
            if !valid {
                stale.push(*mapping);
            }
            valid
        });
        for mapping in &stale {
            self.unmap(mapping, effects);
        }
        true
    }

    fn unmap(&self, mapping: &Mapping, effects: &mut Effects) {
        if let Some(guest) = self.window_base.checked_add(mapping.data()) {
            effects.push(Effect::UnmapMemory {
                guest,
                size: mapping.size,
            });
        }
    }

    /// Pushes the interrupt's new state: the level for [`InterruptKind::Level`], an edge for
    /// [`InterruptKind::Edge`] when `edge` (something happened) and anything is pending.
    fn update_interrupt(
        &self,
        state: &State,
        registry: &Registry,
        edge: bool,
        effects: &mut Effects,
    ) {
        let asserted = !state.masked && pending(state, registry);
        match state.kind {
            InterruptKind::Level => match &self.lines {
                Some(lines) => {
                    let vcpus = lines.set_line(self.intid, asserted);
                    if vcpus != 0 {
                        effects.push(Effect::Wake { vcpus });
                    }
                }
                None => effects.push(Effect::SetLevel {
                    intid: self.intid,
                    level: asserted,
                }),
            },
            InterruptKind::Edge => {
                if edge && asserted {
                    effects.push(Effect::Raise { intid: self.intid });
                }
            }
            InterruptKind::Delegated => effects.push(Effect::Signal(self.client)),
        }
    }
}

impl SignalTarget for QnxShmem {
    /// A peer notified this client or the membership of one of its regions changed.
    fn release(&self, effects: &mut Effects) {
        self.reset(effects);
    }

    fn signalled(&self, effects: &mut Effects) {
        let mut state = self.state.lock();
        let registry = self.registry.lock();
        self.prune(&mut state, &registry, effects);
        // A delegated interrupt is the owner's to recompute (it is signalling us now).
        if state.kind != InterruptKind::Delegated {
            self.update_interrupt(&state, &registry, true, effects);
        }
    }
}

/// After a detach (its unmaps already pushed): memory a released region left behind is
/// zeroed and returned to the pool when the effects are applied, after those unmaps.
fn scrub_after(registry: &Registry, partition: u16, effects: &mut Effects) {
    if registry.has_dirty(partition) {
        effects.push(Effect::Scrub);
    }
}

/// Whether any attached region has something unread for the device's client.
fn pending(state: &State, registry: &Registry) -> bool {
    state
        .mappings
        .iter()
        .any(|mapping| registry.pending(mapping.region, mapping.index))
}

/// The attached region whose control page holds window offset `offset`, and the offset in it.
fn control_page(state: &State, offset: u64) -> Option<(Mapping, u64)> {
    state.mappings.iter().find_map(|mapping| {
        let register = offset.checked_sub(mapping.control)?;
        (register < PAGE_SIZE).then_some((*mapping, register))
    })
}

/// The bytes of a store of `value` at `offset`, each with its own offset (little-endian).
fn bytes_of(offset: u64, width: AccessWidth, value: u64) -> impl Iterator<Item = (u64, u8)> {
    (0..width.bytes())
        .zip(value.to_le_bytes())
        .filter_map(move |(i, byte)| Some((offset.checked_add(i)?, byte)))
}

/// Index of byte `at` in the register `[start, start + len)`, if it lies there.
fn field(at: u64, start: u64, len: u64) -> Option<usize> {
    let index = at.checked_sub(start)?;
    if index < len {
        usize::try_from(index).ok()
    } else {
        None
    }
}

/// Copies `bytes` into `image` at `at` (nothing if it does not fit).
fn put(image: &mut [u8], at: u64, bytes: &[u8]) {
    let Ok(at) = usize::try_from(at) else {
        return;
    };
    if let Some(target) = at
        .checked_add(bytes.len())
        .and_then(|end| image.get_mut(at..end))
    {
        target.copy_from_slice(bytes);
    }
}

/// A little-endian load of `width` at `offset` of `image`; bytes outside read 0.
fn extract(image: &[u8], offset: u64, width: AccessWidth) -> u64 {
    (0..width.bytes()).fold(0, |value, i| {
        let byte = offset
            .checked_add(i)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| image.get(at))
            .copied()
            .unwrap_or(0);
        value | u64::from(byte) << (8 * i)
    })
}

/// The factory page as a partition's MMIO device.
struct FactoryPage(Arc<QnxShmem>);

impl MmioDevice for FactoryPage {
    fn name(&self) -> &'static str {
        "qnx-shmem factory"
    }

    fn size(&self) -> u64 {
        PAGE_SIZE
    }

    fn read(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        _effects: &mut Effects,
    ) -> u64 {
        self.0.read_factory(offset, width)
    }

    fn write(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        self.0.write_factory(offset, width, value, effects);
    }
}

/// The window as a partition's MMIO device.
struct Window(Arc<QnxShmem>);

impl MmioDevice for Window {
    fn name(&self) -> &'static str {
        "qnx-shmem window"
    }

    /// Only the control pages of attached regions answer; any other access to the window
    /// (a detached region's pages, gaps) is outside the partition's map.
    fn claims(&self, offset: u64) -> bool {
        self.0.is_control_page(offset)
    }

    fn size(&self) -> u64 {
        SHMEM_WINDOW_SIZE
    }

    fn read(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        effects: &mut Effects,
    ) -> u64 {
        self.0.read_window(offset, width, effects)
    }

    fn write(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        self.0.write_window(offset, width, value, effects);
    }
}
