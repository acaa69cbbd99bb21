//! The host-wide region registry: named regions, their memory from the shared-memory pool, their up to 16 clients, and the notify/status bookkeeping between them.
//!
//! Not internally locked: the system keeps it in a `spin::Mutex` that device code takes after
//! its own state lock (never the other way round). The registry never calls a device; every
//! operation that concerns other clients returns them as [`Signals`].

use alloc::vec::Vec;

use super::{HostName, MAX_CLIENTS, Signals, Status};
use crate::addr::{HostPhysAddr, PAGE_SIZE, PhysRange};
use crate::device::{ClientId, Effect, Effects};
use crate::memory::PhysRangeSet;

/// Block size for 2 MiB-aligned placement of big regions (so stage 2 can use blocks).
const BLOCK: u64 = 2 << 20;

/// Clears host memory; implemented by arch glue, which can write host-physical memory.
pub trait ZeroMemory: Send + Sync {
    /// Writes zeroes over `range` (page-aligned).
    fn zero(&self, range: PhysRange);
}

/// Names a region while it exists. Ids of a removed region never name a later one (each
/// table slot carries a generation), so a stale id finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionId {
    slot: u32,
    generation: u32,
}

/// A client's place in a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The region.
    pub region: RegionId,
    /// The client's index (0-15): its bit in notify masks and status words.
    pub index: u8,
    /// The region's host memory.
    pub base: HostPhysAddr,
    /// Bytes (whole pages).
    pub size: u64,
}

/// What a region is, for reports and personalities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// Host name.
    pub name: HostName,
    /// Host memory.
    pub base: HostPhysAddr,
    /// Bytes (whole pages).
    pub size: u64,
    /// Created at start-up (lives for the whole run).
    pub startup: bool,
    /// Bitmap of the occupied client indices.
    pub active: u16,
}

/// One occupied client slot.
#[derive(Clone, Copy, Debug)]
struct Client {
    id: ClientId,
    /// Bit i: client i notified this one since its last status read.
    notified_by: u16,
    /// A client attached or detached since this one's last status read.
    membership_changed: bool,
}

struct Region {
    name: HostName,
    memory: PhysRange,
    startup: bool,
    clients: [Option<Client>; MAX_CLIENTS],
}

impl Region {
    fn active(&self) -> u16 {
        self.clients
            .iter()
            .enumerate()
            .filter(|(_, client)| client.is_some())
            .fold(0, |mask, (index, _)| mask | bit(index))
    }

    fn attachment(&self, id: RegionId, index: usize) -> Attachment {
        Attachment {
            region: id,
            index: u8::try_from(index).unwrap_or(u8::MAX),
            base: self.memory.start,
            size: self.memory.size(),
        }
    }

    fn client(&self, index: u8) -> Option<&Client> {
        self.clients.get(usize::from(index))?.as_ref()
    }

    /// Marks a membership change at every client but `except` and lists them.
    fn membership_changed(&mut self, except: Option<usize>) -> Signals {
        let mut signals = Signals::new();
        for (index, slot) in self.clients.iter_mut().enumerate() {
            if let Some(client) = slot
                && Some(index) != except
            {
                client.membership_changed = true;
                signals.push(client.id);
            }
        }
        signals
    }
}

struct Entry {
    generation: u32,
    region: Option<Region>,
}

/// All shared-memory regions of the system and the pool they come from.
pub struct Registry {
    zeroer: &'static dyn ZeroMemory,
    /// Free memory, all of it zeroed (so taking a region from it needs no zeroing).
    pool: PhysRangeSet,
    entries: Vec<Entry>,
    /// Memory of released run-time regions still to be zeroed before it goes back to the
    /// pool, with the partition whose detach released it: in no region and not in the pool
    /// meanwhile. Zeroed by [`scrub`] on that partition's behalf, outside the registry's lock,
    /// so no guest decides how long that lock is held.
    dirty: Vec<(u16, PhysRange)>,
}

/// Zeroes the memory of the run-time regions partition `partition` released and returns it
/// to the pool, one range at a time, without holding `registry`'s lock while it writes (the
/// lock is only taken to take a range and to give it back). Called on that partition's
/// behalf after its mappings of them are gone: another partition's releases are left to it
/// (they may still be mapped there, and zeroing them is not this partition's time to spend).
pub fn scrub(registry: &spin::Mutex<Registry>, partition: u16) {
    loop {
        let taken = {
            let mut locked = registry.lock();
            let at = locked.dirty.iter().position(|&(by, _)| by == partition);
            at.map(|at| (locked.dirty.swap_remove(at).1, locked.zeroer))
        };
        let Some((memory, zeroer)) = taken else {
            return;
        };
        zeroer.zero(memory);
        registry.lock().pool.insert(memory);
    }
}

/// Bit `index` of a 16-bit client mask (0 for an index out of range).
fn bit(index: usize) -> u16 {
    u32::try_from(index)
        .ok()
        .and_then(|index| 1u16.checked_shl(index))
        .unwrap_or(0)
}

impl Registry {
    /// A registry whose regions come from `memory` (all shared memory: the start-up regions
    /// and the run-time pool; shrunk inwards to whole pages). `zeroer` clears region memory.
    pub fn new(memory: PhysRange, zeroer: &'static dyn ZeroMemory) -> Registry {
        let mut pool = PhysRangeSet::new();
        if let Some(start) = memory.start.align_up(PAGE_SIZE) {
            let end = memory.end.align_down(PAGE_SIZE);
            if start < end {
                pool.insert(PhysRange { start, end });
            }
        }
        // Zeroed once, at boot, before any guest runs: from then on memory enters the pool
        // only zeroed.
        for range in pool.ranges() {
            zeroer.zero(*range);
        }
        Registry {
            zeroer,
            pool,
            entries: Vec::new(),
            dirty: Vec::new(),
        }
    }

    /// Creates a region that lives for the whole run (a configuration `create`, an ivshmem
    /// region), zeroed. `size` is rounded up to whole pages. The same name again with the same
    /// size gives the existing region; with another size, [`Status::UnknownFailure`].
    /// Errors: [`Status::IllegalName`], [`Status::UnknownFailure`] (size 0),
    /// [`Status::NoMemory`].
    pub fn create_at_startup(&mut self, host_name: &str, size: u64) -> Result<RegionId, Status> {
        let name = HostName::new(host_name.as_bytes())?;
        let size = page_round(size).ok_or(Status::UnknownFailure)?;
        if let Some(id) = self.lookup(host_name) {
            let region = self.get_mut(id).ok_or(Status::UnknownFailure)?;
            if region.memory.size() != size {
                return Err(Status::UnknownFailure);
            }
            region.startup = true;
            return Ok(id);
        }
        let memory = self.allocate(size)?;
        Ok(self.insert(Region {
            name,
            memory,
            startup: true,
            clients: [None; MAX_CLIENTS],
        }))
    }

    /// Attaches `client` to region `host_name`, creating it with `pages` 4 KiB pages (zeroed)
    /// if it does not exist; an existing region keeps its size whatever `pages` says. A client
    /// already attached gets its existing attachment. Attaching marks nothing at the other
    /// clients: a personality that reports arrivals calls [`Registry::announce`].
    /// Errors: [`Status::IllegalName`]; [`Status::DoesNotExist`] when the region does not
    /// exist and `pages` is 0 (nothing to create: the request acts as a find);
    /// [`Status::NoMemory`] when the pool cannot hold it; [`Status::ClientMax`] when 16
    /// other clients are attached.
    pub fn attach(
        &mut self,
        host_name: &str,
        pages: u32,
        client: ClientId,
    ) -> Result<Attachment, Status> {
        let name = HostName::new(host_name.as_bytes())?;
        if let Some(id) = self.lookup(host_name) {
            return self.join(id, client);
        }
        if pages == 0 {
            return Err(Status::DoesNotExist);
        }
        let memory = self.allocate(u64::from(pages).saturating_mul(PAGE_SIZE))?;
        let mut clients = [None; MAX_CLIENTS];
        if let Some(first) = clients.first_mut() {
            *first = Some(Client {
                id: client,
                notified_by: 0,
                membership_changed: false,
            });
        }
        let region = self.insert(Region {
            name,
            memory,
            startup: false,
            clients,
        });
        Ok(Attachment {
            region,
            index: 0,
            base: memory.start,
            size: memory.size(),
        })
    }

    /// Attaches `client` to region `host_name` only if it exists ([`Status::DoesNotExist`]
    /// otherwise); as [`Registry::attach`] else.
    pub fn find(&mut self, host_name: &str, client: ClientId) -> Result<Attachment, Status> {
        HostName::new(host_name.as_bytes())?;
        let id = self.lookup(host_name).ok_or(Status::DoesNotExist)?;
        self.join(id, client)
    }

    /// Tells the other clients of `region` that client `index` arrived: marks a membership
    /// change at each and lists them. Nothing if `index` is not attached.
    pub fn announce(&mut self, region: RegionId, index: u8) -> Signals {
        match self.get_mut(region) {
            Some(found) if found.client(index).is_some() => {
                found.membership_changed(Some(usize::from(index)))
            }
            _ => Signals::new(),
        }
    }

    /// Detaches client `index` from `region`: frees the slot, marks a membership change at
    /// the other clients and lists them. A run-time region whose last client left goes, its
    /// memory waiting for [`scrub`] (see [`Registry::has_dirty`]); a start-up region stays. Nothing if the slot is
    /// empty or the region gone.
    pub fn detach(&mut self, region: RegionId, index: u8) -> Signals {
        let Some(found) = self.get_mut(region) else {
            return Signals::new();
        };
        let Some(slot) = found.clients.get_mut(usize::from(index)) else {
            return Signals::new();
        };
        let Some(client) = slot.take() else {
            return Signals::new();
        };
        let signals = found.membership_changed(None);
        self.release_if_unused(region, client.id.partition);
        signals
    }

    /// Detaches every client of partition `client_partition` from every region (the
    /// partition stopped or restarts); lists the remaining clients of those regions.
    pub fn detach_all(&mut self, client_partition: u16) -> Signals {
        let mut signals = Signals::new();
        let ids: Vec<RegionId> = self.ids().collect();
        for id in ids {
            let Some(region) = self.get_mut(id) else {
                continue;
            };
            let mut removed = false;
            for slot in &mut region.clients {
                if slot.is_some_and(|client| client.id.partition == client_partition) {
                    *slot = None;
                    removed = true;
                }
            }
            if removed {
                signals.extend(&region.membership_changed(None));
                self.release_if_unused(id, client_partition);
            }
        }
        signals
    }

    /// [`Registry::notify`] with one [`Effect::Signal`] per target pushed straight into
    /// `effects` (the doorbell path: nothing built or copied).
    pub fn notify_into(&mut self, region: RegionId, from: u8, mask: u32, effects: &mut Effects) {
        self.notify_each(region, from, mask, |client| {
            effects.push(Effect::Signal(client));
        });
    }

    /// Client `from` of `region` notifies the clients whose bits are set in `mask` (bit i =
    /// client index i; `0xffff_ffff` = everyone but `from`). Each target records `from`'s bit
    /// in its notified-by mask. Bits of empty slots, of the sender and above 15 are ignored,
    /// as is a sender that is not attached. Lists the targets.
    pub fn notify(&mut self, region: RegionId, from: u8, mask: u32) -> Signals {
        let mut signals = Signals::new();
        self.notify_each(region, from, mask, |client| signals.push(client));
        signals
    }

    /// The notify itself: records `from`'s bit in each target and hands the target to
    /// `target`.
    fn notify_each(
        &mut self,
        region: RegionId,
        from: u8,
        mask: u32,
        mut target: impl FnMut(ClientId),
    ) {
        let Some(found) = self.get_mut(region) else {
            return;
        };
        if found.client(from).is_none() {
            return;
        }
        let sender = bit(usize::from(from));
        // Only the slots the mask names (usually one), not every slot.
        let mut wanted = mask & ((1u32 << MAX_CLIENTS) - 1) & !u32::from(sender);
        while wanted != 0 {
            let index = wanted.trailing_zeros() as usize;
            wanted &= wanted - 1;
            if let Some(Some(client)) = found.clients.get_mut(index) {
                client.notified_by |= sender;
                target(client.id);
            }
        }
    }

    /// Status word of client `index`: bits 0-15 the clients that notified it since its last
    /// read (cleared by this read), bits 16-31 the active clients. Acknowledges a membership
    /// change. 0 if the slot is empty.
    pub fn take_status(&mut self, region: RegionId, index: u8) -> u32 {
        let Some(found) = self.get_mut(region) else {
            return 0;
        };
        let active = found.active();
        let Some(Some(client)) = found.clients.get_mut(usize::from(index)) else {
            return 0;
        };
        let notified_by = core::mem::take(&mut client.notified_by);
        client.membership_changed = false;
        u32::from(notified_by) | u32::from(active) << 16
    }

    /// Whether client `index` has something unread: notified-by bits or a membership change.
    pub fn pending(&self, region: RegionId, index: u8) -> bool {
        self.get(region)
            .and_then(|found| found.client(index))
            .is_some_and(|client| client.notified_by != 0 || client.membership_changed)
    }

    /// Bitmap of the occupied client indices of `region` (0 if it is gone).
    pub fn active_mask(&self, region: RegionId) -> u16 {
        self.get(region).map_or(0, Region::active)
    }

    /// The client in slot `index` of `region`, if any.
    pub fn holder(&self, region: RegionId, index: u8) -> Option<ClientId> {
        self.get(region)?.client(index).map(|client| client.id)
    }

    /// Name, memory and state of `region`, if it exists.
    pub fn region(&self, region: RegionId) -> Option<RegionInfo> {
        let found = self.get(region)?;
        Some(RegionInfo {
            name: found.name,
            base: found.memory.start,
            size: found.memory.size(),
            startup: found.startup,
            active: found.active(),
        })
    }

    /// The region named `host_name`, if it exists.
    pub fn lookup(&self, host_name: &str) -> Option<RegionId> {
        self.entries.iter().enumerate().find_map(|(slot, entry)| {
            let region = entry.region.as_ref()?;
            (region.name.as_bytes() == host_name.as_bytes()).then_some(RegionId {
                slot: u32::try_from(slot).ok()?,
                generation: entry.generation,
            })
        })
    }

    /// Bytes left in the pool for run-time regions.
    pub fn free_bytes(&self) -> u64 {
        self.pool.total()
    }

    fn ids(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.entries.iter().enumerate().filter_map(|(slot, entry)| {
            entry.region.as_ref()?;
            Some(RegionId {
                slot: u32::try_from(slot).ok()?,
                generation: entry.generation,
            })
        })
    }

    fn get(&self, id: RegionId) -> Option<&Region> {
        let entry = self.entries.get(usize::try_from(id.slot).ok()?)?;
        if entry.generation != id.generation {
            return None;
        }
        entry.region.as_ref()
    }

    fn get_mut(&mut self, id: RegionId) -> Option<&mut Region> {
        let entry = self.entries.get_mut(usize::try_from(id.slot).ok()?)?;
        if entry.generation != id.generation {
            return None;
        }
        entry.region.as_mut()
    }

    /// Adds `client` to existing region `id` (or finds it there).
    fn join(&mut self, id: RegionId, client: ClientId) -> Result<Attachment, Status> {
        let region = self.get_mut(id).ok_or(Status::DoesNotExist)?;
        if let Some(index) = region
            .clients
            .iter()
            .position(|slot| slot.is_some_and(|c| c.id == client))
        {
            return Ok(region.attachment(id, index));
        }
        let index = region
            .clients
            .iter()
            .position(Option::is_none)
            .ok_or(Status::ClientMax)?;
        let slot = region.clients.get_mut(index).ok_or(Status::ClientMax)?;
        *slot = Some(Client {
            id: client,
            notified_by: 0,
            membership_changed: false,
        });
        Ok(region.attachment(id, index))
    }

    /// Whether memory partition `partition` released waits for [`scrub`].
    pub fn has_dirty(&self, partition: u16) -> bool {
        self.dirty.iter().any(|&(by, _)| by == partition)
    }

    /// Takes `size` bytes from the pool (2 MiB-aligned when at least 2 MiB and such room
    /// exists, else page-aligned); pool memory is zeroed already.
    fn allocate(&mut self, size: u64) -> Result<PhysRange, Status> {
        let aligned = if size >= BLOCK {
            self.pool.allocate(size, BLOCK)
        } else {
            None
        };
        let memory = aligned
            .or_else(|| self.pool.allocate(size, PAGE_SIZE))
            .ok_or(Status::NoMemory)?;
        Ok(memory)
    }

    fn insert(&mut self, region: Region) -> RegionId {
        if let Some((slot, entry)) = self
            .entries
            .iter_mut()
            .enumerate()
            .find(|(_, entry)| entry.region.is_none())
            && let Ok(slot) = u32::try_from(slot)
        {
            entry.region = Some(region);
            return RegionId {
                slot,
                generation: entry.generation,
            };
        }
        // A region holds at least one page of the pool, so the table never outgrows u32.
        let slot = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.entries.push(Entry {
            generation: 0,
            region: Some(region),
        });
        RegionId {
            slot,
            generation: 0,
        }
    }

    /// Removes run-time region `id` if it has no client left: retires the id and leaves its
    /// memory for [`scrub`] (zeroed outside the lock, then back to the pool).
    fn release_if_unused(&mut self, id: RegionId, by: u16) {
        let Some(entry) = usize::try_from(id.slot)
            .ok()
            .and_then(|slot| self.entries.get_mut(slot))
        else {
            return;
        };
        let unused = entry.generation == id.generation
            && entry
                .region
                .as_ref()
                .is_some_and(|region| !region.startup && region.active() == 0);
        if !unused {
            return;
        }
        if let Some(region) = entry.region.take() {
            entry.generation = entry.generation.wrapping_add(1);
            self.dirty.push((by, region.memory));
        }
    }
}

/// `size` rounded up to whole pages; `None` for 0 or on overflow.
fn page_round(size: u64) -> Option<u64> {
    if size == 0 {
        return None;
    }
    Some(size.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}
