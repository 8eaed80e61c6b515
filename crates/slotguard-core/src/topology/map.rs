//! An immutable snapshot of slot ownership, indexed by slot and by node
//! address.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::health::NodeHealth;
use crate::addr::NodeAddr;
use crate::request::Role;
use crate::slot::SLOT_COUNT;

pub(super) const UNCOVERED: u16 = u16::MAX;

/// A small, fast hasher for node addresses (FxHash's multiply-rotate).
///
/// Maps keyed by address are read on every request (the map's node index,
/// the health registry, per-node breakers), and their keys come from the
/// cluster and our own configuration, not from callers: SipHash's
/// flooding resistance buys nothing there and costs more than the lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct AddrHasher(u64);

const SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl AddrHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(SEED);
    }
}

impl Hasher for AddrHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weakest; hashbrown picks buckets
        // from the low bits and tags from the high ones.
        self.0.rotate_left(26)
    }
}

/// A map keyed by node address, with [`AddrHasher`].
pub type AddrMap<V> = HashMap<NodeAddr, V, BuildHasherDefault<AddrHasher>>;

/// One node in a [`SlotMap`].
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Where to reach it.
    pub addr: NodeAddr,
    /// Its cluster node id, when the source reported it.
    pub id: Option<Arc<str>>,
    /// Its role in its shard.
    pub role: Role,
    /// Live health, shared across map generations.
    pub health: Arc<NodeHealth>,
}

/// A primary, its replicas, and the slot ranges they serve.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The primary.
    pub primary: NodeInfo,
    /// Its replicas.
    pub replicas: Vec<NodeInfo>,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

/// An immutable snapshot of slot ownership.
#[derive(Clone)]
pub struct SlotMap {
    pub(super) generation: u64,
    pub(super) shards: Vec<Shard>,
    pub(super) slot_to_shard: Box<[u16]>,
    pub(super) source: Option<NodeAddr>,
    // Address → (shard, 0 for its primary or 1 + replica position), so a
    // lookup by address costs one hash, not a scan of every node.
    index: AddrMap<(u16, u16)>,
}

impl fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMap")
            .field("generation", &self.generation)
            .field("covered_slots", &self.covered_slots())
            .field("shards", &self.shards)
            .field("source", &self.source)
            .finish()
    }
}

impl SlotMap {
    pub(super) fn empty() -> Self {
        Self {
            generation: 0,
            shards: Vec::new(),
            slot_to_shard: vec![UNCOVERED; SLOT_COUNT as usize].into_boxed_slice(),
            source: None,
            index: AddrMap::default(),
        }
    }

    /// Rebuild the address index after the shards changed. An address
    /// listed twice resolves to its first entry, as a scan would.
    pub(super) fn reindex(&mut self) {
        let mut index = AddrMap::default();
        index.reserve(self.shards.iter().map(|s| 1 + s.replicas.len()).sum());
        for (i, shard) in self.shards.iter().enumerate() {
            let nodes = std::iter::once(&shard.primary).chain(shard.replicas.iter());
            for (pos, node) in nodes.enumerate() {
                index
                    .entry(node.addr.clone())
                    .or_insert((i as u16, pos as u16));
            }
        }
        self.index = index;
    }

    /// Bumped on every install or patch; 0 means nothing was ever loaded.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The node whose view this map was built from.
    pub fn source(&self) -> Option<&NodeAddr> {
        self.source.as_ref()
    }

    /// Every shard.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard serving `slot`, if the slot is covered.
    pub fn shard_for_slot(&self, slot: u16) -> Option<&Shard> {
        let idx = *self.slot_to_shard.get(slot as usize)?;
        self.shards.get(idx as usize)
    }

    /// The primary serving `slot`, if the slot is covered.
    pub fn primary_for_slot(&self, slot: u16) -> Option<&NodeInfo> {
        self.shard_for_slot(slot).map(|s| &s.primary)
    }

    /// How many of the 16384 slots have an owner.
    pub fn covered_slots(&self) -> usize {
        self.slot_to_shard
            .iter()
            .filter(|&&s| s != UNCOVERED)
            .count()
    }

    /// Every node, primaries first within each shard.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter()))
    }

    /// The node with this address and its shard.
    pub fn node(&self, addr: &NodeAddr) -> Option<(&Shard, &NodeInfo)> {
        let &(shard, pos) = self.index.get(addr)?;
        let shard = self.shards.get(shard as usize)?;
        let node = match pos {
            0 => &shard.primary,
            n => shard.replicas.get(n as usize - 1)?,
        };
        Some((shard, node))
    }

    /// Whether `addr` is a node of this map.
    pub fn contains(&self, addr: &NodeAddr) -> bool {
        self.index.contains_key(addr)
    }
}
