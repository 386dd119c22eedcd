//! The room store of a single process: history in memory, under a byte
//! cap, and presence from this node's members.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;
use wshub_protocol::{PresenceMember, RoomName};

use super::log::RoomLog;
use super::{HistoryRequest, Position, Reply, RoomStore, StoreUnavailable, StoredHistory};
use crate::broker::Publication;
use crate::store::Retention;

/// What an empty log (position and epoch) is counted as against the cap,
/// so that the cap also bounds how many rooms are remembered.
const LOG_OVERHEAD_BYTES: usize = 128;

/// How long a room's position (offset and epoch) is remembered after its
/// last publication, once its messages have expired: a member of a quiet
/// room then keeps its place instead of seeing a new epoch.
const POSITION_KEPT_MS: u64 = 24 * 3600 * 1000;

/// Rooms' history and presence in this process: what a single node needs,
/// and what each node keeps for itself in a cluster whose broker carries
/// publications only (then offsets are this node's own, and presence lists
/// this node's members).
#[derive(Debug)]
pub struct MemoryStore {
    // Keys are client-chosen strings: keep std's DoS-resistant hasher.
    logs: DashMap<RoomName, Arc<Mutex<RoomLog>>>,
    presence: DashMap<RoomName, Vec<PresenceMember>>,
    bytes: AtomicUsize,
    max_bytes: usize,
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of history across every room
    /// (0: no cap). Past it, the rooms published to least recently lose
    /// their history (and epoch), down to 90 % of the cap.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            logs: DashMap::new(),
            presence: DashMap::new(),
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    fn log(&self, room: &RoomName, retention: Retention, now_ms: u64) -> Arc<Mutex<RoomLog>> {
        if let Some(log) = self.logs.get(room) {
            return Arc::clone(&log);
        }
        let entry = self.logs.entry(room.clone()).or_insert_with(|| {
            self.bytes.fetch_add(LOG_OVERHEAD_BYTES, Ordering::Relaxed);
            Arc::new(Mutex::new(RoomLog::new(retention, now_ms)))
        });
        Arc::clone(&entry)
    }

    fn account(&self, added: usize, freed: usize) {
        self.bytes.fetch_add(added, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Past the cap, forgets whole rooms, least recently published first,
    /// down to 90 % of it. `just_published` goes last. Logs busy
    /// publishing are skipped.
    fn enforce_cap(&self, just_published: &RoomName) {
        if self.max_bytes == 0 || self.bytes() <= self.max_bytes {
            return;
        }
        let mut candidates: Vec<(bool, u64, RoomName)> = self
            .logs
            .iter()
            .filter_map(|entry| {
                let last = entry.value().try_lock()?.last_active_ms();
                Some((entry.key() == just_published, last, entry.key().clone()))
            })
            .collect();
        candidates.sort_unstable();
        let target = self.max_bytes / 10 * 9;
        for (_, _, room) in candidates {
            if self.bytes() <= target {
                break;
            }
            self.forget_if(&room, |_| true);
        }
    }

    /// Drops `room`'s log when `drop` says so (and no one is using it).
    fn forget_if(&self, room: &RoomName, drop: impl FnOnce(&mut RoomLog) -> bool) {
        let mut freed = 0;
        self.logs.remove_if(room, |_, log| {
            let Some(mut log) = log.try_lock() else {
                return false;
            };
            if !drop(&mut log) {
                return false;
            }
            freed = log.bytes() + LOG_OVERHEAD_BYTES;
            true
        });
        self.account(0, freed);
    }
}

impl RoomStore for MemoryStore {
    fn append(
        &self,
        room: &RoomName,
        publication: &Publication,
        retention: Retention,
        stored: Reply<Position>,
    ) -> Result<(), StoreUnavailable> {
        let log = self.log(room, retention, publication.time_ms);
        let mut guard = log.lock();
        let (position, added, freed) = guard.append(&publication.frame, publication.time_ms);
        self.account(added, freed);
        // Under the log's lock: the hub delivers in offset order.
        stored(Ok(position));
        drop(guard);
        self.enforce_cap(room);
        Ok(())
    }

    fn read(&self, room: &RoomName, request: HistoryRequest, reply: Reply<StoredHistory>) {
        let log = self.log(room, request.retention, request.now_ms);
        let answer = log
            .lock()
            .read(request.after, request.limit, request.now_ms);
        reply(Ok(answer));
    }

    fn presence_joined(&self, room: &RoomName, member: &PresenceMember) {
        self.presence
            .entry(room.clone())
            .or_default()
            .push(member.clone());
    }

    fn presence_left(&self, room: &RoomName, id: &str) {
        self.presence.remove_if_mut(room, |_, members| {
            members.retain(|member| member.id != id);
            members.is_empty()
        });
    }

    fn read_presence(&self, room: &RoomName, reply: Reply<Vec<PresenceMember>>) {
        let members = self
            .presence
            .get(room)
            .map(|members| members.clone())
            .unwrap_or_default();
        reply(Ok(members));
    }

    fn sweep(&self, now_ms: u64) {
        let rooms: Vec<RoomName> = self.logs.iter().map(|entry| entry.key().clone()).collect();
        for room in rooms {
            self.forget_if(&room, |log| {
                let freed = log.expire(now_ms);
                self.account(0, freed);
                now_ms >= log.last_active_ms().saturating_add(POSITION_KEPT_MS)
            });
        }
        if self.logs.capacity() > 4 * self.logs.len().max(1024) {
            self.logs.shrink_to_fit();
        }
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}
