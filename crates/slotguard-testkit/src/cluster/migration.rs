//! Moving slots between nodes (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE).

use std::ops::RangeInclusive;

use super::{LocalCluster, NodeState, MIGRATE_BATCH};
use crate::error::TestkitError;

impl LocalCluster {
    // ----- slot migration ------------------------------------------------

    /// Starts moving `slot`: `CLUSTER SETSLOT slot IMPORTING <from-id>` on
    /// `to` first, then `MIGRATING <to-id>` on `from` (the order Redis
    /// documents, so no request is ever redirected to a node not yet importing).
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) -> Result<(), TestkitError> {
        if from == to {
            return Err(TestkitError::Unexpected(format!(
                "cannot migrate slot {slot} from node {from} to itself"
            )));
        }
        let slot_s = slot.to_string();
        let (from_id, to_id) = (self.node_id(from)?, self.node_id(to)?);
        self.node(to)?
            .exec_ok(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id])?;
        self.node(from)?
            .exec_ok(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id])?;
        Ok(())
    }

    /// Moves every key of `slot` from `from` to `to` with
    /// `CLUSTER GETKEYSINSLOT` + `MIGRATE ... REPLACE KEYS` in batches of 100.
    /// Returns how many keys were moved.
    pub fn migrate_keys(&self, slot: u16, from: usize, to: usize) -> Result<usize, TestkitError> {
        let source = self.node(from)?;
        let target_port = self.node(to)?.port.to_string();
        let slot_s = slot.to_string();
        let batch = MIGRATE_BATCH.to_string();
        let mut moved = 0;
        loop {
            let reply = source.exec_ok(&["CLUSTER", "GETKEYSINSLOT", &slot_s, &batch])?;
            let keys: Vec<Vec<u8>> = reply
                .as_array()
                .ok_or_else(|| TestkitError::Protocol(format!("GETKEYSINSLOT returned {reply:?}")))?
                .iter()
                .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec))
                .collect();
            if keys.is_empty() {
                return Ok(moved);
            }
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                b"127.0.0.1",
                target_port.as_bytes(),
                b"",
                b"0",
                b"1500",
                b"REPLACE",
                b"KEYS",
            ];
            args.extend(keys.iter().map(Vec::as_slice));
            source.exec_ok(&args)?;
            moved += keys.len();
        }
    }

    /// Ends a migration: `CLUSTER SETSLOT slot NODE <to-id>` on `to`, then on
    /// the source (the slot's current owner), then on every other live primary.
    pub fn finish_migration(&self, slot: u16, to: usize) -> Result<(), TestkitError> {
        let to_id = self.node_id(to)?;
        let (_, view) = self.live_view(None)?;
        let source = view
            .iter()
            .find(|n| n.is_master() && n.owns(slot))
            .map(|n| self.index_of_id_or_err(&n.id))
            .transpose()?;
        let slot_s = slot.to_string();
        let setslot = [
            "CLUSTER",
            "SETSLOT",
            slot_s.as_str(),
            "NODE",
            to_id.as_str(),
        ];
        self.node(to)?.exec_ok(&setslot)?;
        let mut done = vec![to];
        if let Some(source) = source.filter(|s| *s != to) {
            self.node(source)?.exec_ok(&setslot)?;
            done.push(source);
        }
        for n in view.iter().filter(|n| n.is_master()) {
            let Some(index) = self.index_of_id(&n.id) else {
                continue;
            };
            if done.contains(&index) || self.nodes[index].state() != NodeState::Running {
                continue;
            }
            self.nodes[index].exec_ok(&setslot)?;
        }
        Ok(())
    }

    /// Moves every slot of `slots` from `from` to `to`, one slot at a time
    /// (begin, migrate keys, finish).
    pub fn move_slots(
        &self,
        slots: RangeInclusive<u16>,
        from: usize,
        to: usize,
    ) -> Result<(), TestkitError> {
        for slot in slots {
            self.begin_migration(slot, from, to)?;
            self.migrate_keys(slot, from, to)?;
            self.finish_migration(slot, to)?;
        }
        self.refresh_snapshot();
        Ok(())
    }
}
