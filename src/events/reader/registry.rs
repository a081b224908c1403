//! Who follows what: the followed streams of a replica in their groups (one group of
//! all, or one per hash slot), each group with its wake stream, the state of its
//! reader and the token that ends it.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{StoredEvent, format::EntryId};

/// Which reader a followed stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum GroupId {
    /// Every followed stream (one node).
    All,
    /// The followed streams of one hash slot (Redis Cluster).
    Slot(u16),
}

/// The followers of every group, and what the readers' job is doing.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) groups: HashMap<GroupId, Group>,
    /// Followers whose consumer still holds their stream: what the cap counts.
    pub(super) live: usize,
    /// Set once the job runs: group readers start only then.
    pub(super) running: bool,
    /// Set once the job stopped: nobody will feed new followers.
    pub(super) closed: bool,
}

/// One group and its reader.
pub(super) struct Group {
    /// Tells a reader of an ended group from the reader of a later group of the same
    /// slot.
    pub(super) instance: u64,
    pub(super) wake_key: String,
    /// Followed streams by Redis key.
    pub(super) streams: HashMap<String, FollowedStream>,
    pub(super) health: Health,
    /// Fires when the group ends (its last follower left, or shutdown).
    pub(super) stop: CancellationToken,
}

/// How a group's reader is doing, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// Not connected yet, and no attempt has failed.
    Connecting,
    Connected,
    /// Its connection failed or was lost; it is reconnecting.
    Failing,
}

pub(super) struct FollowedStream {
    pub(super) stream_id: String,
    pub(super) followers: HashMap<u64, Follower>,
}

pub(super) struct Follower {
    /// The last entry this follower has (from the replay or from the reader).
    pub(super) cursor: EntryId,
    pub(super) tx: mpsc::Sender<StoredEvent>,
    pub(super) ends_on_final: bool,
}

/// What a group's reader task needs to start.
pub(super) struct Start {
    pub(super) group: GroupId,
    pub(super) instance: u64,
    pub(super) wake_key: String,
    pub(super) stop: CancellationToken,
}

impl Group {
    pub(super) fn new(instance: u64, wake_key: String, shutdown: &CancellationToken) -> Self {
        Self {
            instance,
            wake_key,
            streams: HashMap::new(),
            health: Health::Connecting,
            stop: shutdown.child_token(),
        }
    }

    pub(super) fn start(&self, group: GroupId) -> Start {
        Start {
            group,
            instance: self.instance,
            wake_key: self.wake_key.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl Registry {
    /// Ends group `id` when it is a slot's and has no followed stream left: its reader
    /// stops and closes its connection. Returns whether it ended.
    pub(super) fn end_if_idle(&mut self, id: GroupId) -> bool {
        let idle = matches!(id, GroupId::Slot(_))
            && self
                .groups
                .get(&id)
                .is_some_and(|group| group.streams.is_empty());
        if idle && let Some(group) = self.groups.remove(&id) {
            group.stop.cancel();
        }
        idle
    }

    /// Group `id` if it is still instance `instance`.
    pub(super) fn group_mut(&mut self, id: GroupId, instance: u64) -> Option<&mut Group> {
        self.groups
            .get_mut(&id)
            .filter(|group| group.instance == instance)
    }
}
