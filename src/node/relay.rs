//! Relaying regions' headers into each other's regionchains
//! ([`crate::chain::region_checkpoint`]): a process that follows several regions (`kaon rn`
//! from a config of several regions, `kaon devnet --regions R`) sends, every
//! [`RELAY_INTERVAL`], each region's latest audited sealed header into every other region's
//! regionchain. A checkpoint of the directory region into a region whose copy of the
//! directory differs carries the directory ([`Listing`]), which that region copies; the
//! regions it lists are then checkpointed there too.
//!
//! ```text
//!  region A's RN ─ audited blocks (+ A's directory) ─► relay ─► RegionCheckpoint ─► B's CNs
//!                                                       ▲
//!  region B's RN ─ what B lists, the last checkpoint of A it recorded
//! ```
//!
//! A checkpoint proves itself (a quorum of the region's trusted CN set sealed it), so the relay
//! is trusted with nothing but liveness. A CN-set change is followed only through the header
//! that announced it, so the relay checkpoints any announcing header first; it checks each
//! checkpoint as the receiving regionchain will before sending it.

use crate::chain::region::RegionState;
use crate::chain::region::Seals;
use crate::chain::region_checkpoint::{
    committed_state_root, verify_seal, Listing, RegionCheckpoint, RegionHead,
};
use crate::consensus::selection::set_root;
use crate::crypto::bls::PublicKeyBytes;
use crate::rn::RnView;
use crate::types::system::MAX_SYSTEM_TX_BYTES;
use crate::types::{ChainId, Height};
use alloy_primitives::{Bytes, B256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often each other region's head is checkpointed (when it moved). Every checkpoint costs
/// each receiving node a pairing when it is executed and again whenever the node replays its
/// regionchain after a restart, so this trades the ordering's granularity against that.
pub const RELAY_INTERVAL: Duration = Duration::from_secs(10);
/// A checkpoint sent but not recorded after this long is sent again (a CN restarted, a frame
/// dropped under load, a forged checkpoint taking the region's place in a block).
const RESEND_AFTER: Duration = Duration::from_secs(20);
/// Headers read per region and pass looking for a CN-set announcement: a relay starting
/// behind a long chain catches up over several passes instead of reading it all at once.
const SCAN_LIMIT: u64 = 256;
/// How often the stop flag is looked at while waiting.
const POLL: Duration = Duration::from_millis(100);

/// A region a process follows, as the relay needs it: its RN and its genesis CN set (the set
/// a directory trusts for it first).
#[derive(Clone)]
pub struct RelayedRegion {
    pub view: RnView,
    pub genesis_set: Vec<PublicKeyBytes>,
    /// The hash of the genesis this process follows the region from.
    pub genesis_hash: B256,
}

impl RelayedRegion {
    pub fn new(view: RnView, genesis: &crate::chain::genesis::Genesis) -> anyhow::Result<Self> {
        let set = genesis.cn_set()?;
        let genesis_set = (0..set.len() as u32)
            .map(|i| set.key_bytes(crate::types::CnIndex(i)).copied())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            view,
            genesis_set,
            genesis_hash: genesis.hash().0,
        })
    }
}

/// One direction of relaying: `from`'s headers into `into`'s regionchain.
pub struct Route {
    pub into: RnView,
    pub from: RelayedRegion,
}

/// The routes of a platform followed by one process: every region's headers into every other
/// region's regionchain. A region other than the directory region knows the others once it
/// has copied the directory from a checkpoint of the directory region (which this relay, or
/// another, sends it); until then the routes into it from them wait.
pub fn platform_routes(regions: &[RelayedRegion]) -> Vec<Route> {
    regions
        .iter()
        .enumerate()
        .flat_map(|(i, into)| {
            regions
                .iter()
                .enumerate()
                .filter(move |(j, _)| *j != i)
                .map(|(_, from)| Route {
                    into: into.view.clone(),
                    from: from.clone(),
                })
        })
        .collect()
}

/// One route as the relay follows it.
struct Followed {
    into: RnView,
    /// The sending region's RN.
    view: RnView,
    region: ChainId,
    /// Highest height read looking for CN-set announcements.
    scanned: Height,
    /// The announcing height found and not yet checkpointed, if any.
    announcing: Option<Height>,
    /// CN sets known by root — the genesis set, each set announced by a header the relay
    /// scanned, the set in force at each pass — so a header is checkpointed with the set
    /// that sealed it. At most one more per set change of the region.
    sets: HashMap<B256, Vec<PublicKeyBytes>>,
    /// The last checkpoint sent: its height and when.
    sent: Option<(Height, Instant)>,
    /// When a checkpoint carrying this (directory) region's listing was last sent.
    listing_sent: Option<Instant>,
    /// A search for a set that sealed a header ([`Self::learn_sets`]): the set's root and the
    /// next height to read down from.
    learning: Option<(B256, Height)>,
    /// The hash of the genesis this process follows the region from.
    genesis_hash: B256,
    /// The last error logged as a warning (a repeat is logged at debug level only).
    failing: Option<String>,
}

/// Starts the relay thread over `routes`, a pass every `interval` (normally
/// [`RELAY_INTERVAL`]), until `stop`; no routes, no thread. The thread is
/// critical: a region followed from a genesis other than the one the receiving regionchain
/// records for it (the directory's entry, or the anchor a region's genesis names) stops the
/// process ([`Followed::check_genesis`]).
pub fn spawn(
    routes: Vec<Route>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<std::thread::JoinHandle<anyhow::Result<()>>>> {
    if routes.is_empty() {
        return Ok(None);
    }
    let mut followed: Vec<Followed> = routes
        .into_iter()
        .map(|route| {
            let genesis = route.from.genesis_set;
            Followed {
                region: region_of(&route.from.view),
                into: route.into,
                view: route.from.view,
                scanned: Height(0),
                announcing: None,
                sets: HashMap::from([(set_root(&genesis), genesis)]),
                sent: None,
                listing_sent: None,
                learning: None,
                genesis_hash: route.from.genesis_hash,
                failing: None,
            }
        })
        .collect();
    crate::pipeline::spawn_critical("region-relay", move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                for route in &mut followed {
                    route.check_genesis()?;
                    let outcome = route.relay().map_err(|e| format!("{e:#}"));
                    route.log(outcome);
                }
                next = Instant::now() + interval;
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    })
    .map(Some)
}

impl Followed {
    /// Logs a failed pass as a warning the first time its error is seen, then at debug level
    /// until it changes or a pass succeeds (a region that cannot be checkpointed, e.g. one
    /// whose committees are smaller than its set, would otherwise warn every pass).
    fn log(&mut self, outcome: Result<(), String>) {
        let into = region_of(&self.into);
        match outcome {
            Ok(()) => self.failing = None,
            Err(e) if self.failing.as_ref() == Some(&e) => {
                tracing::debug!(region = %self.region, %into, error = %e, "region checkpoint not relayed");
            }
            Err(e) => {
                tracing::warn!(region = %self.region, %into, error = %e, "region checkpoint not relayed");
                self.failing = Some(e);
            }
        }
    }

    /// Fails when the receiving regionchain records this region (the directory region its
    /// entry, another region the anchor its genesis names) with a genesis other than the one
    /// this process follows it from: a genesis file from another platform, or a forged one,
    /// whose chain the platform does not know. Serving it as that region would answer clients
    /// from a chain no checkpoint can vouch for. Not listed yet: nothing to compare.
    fn check_genesis(&self) -> anyhow::Result<()> {
        let state = self.into.region().read().unwrap_or_else(|e| e.into_inner());
        check_recorded_genesis(&state, self.region, self.genesis_hash)
    }

    /// One pass: sends the next checkpoint of this region when its head moved past the last
    /// one recorded (and none sent is still waiting to be). Into a region that lacks some of
    /// this directory region's view, the checkpoint of the head carries it — or, when the
    /// head is the header recorded last, that header goes again for it.
    fn relay(&mut self) -> anyhow::Result<()> {
        self.note_current_set();
        // Not listed (yet): nothing would be accepted.
        let Some(receiver) = self.receiver() else {
            return Ok(());
        };
        let Some((target, listing)) = self.next_checkpoint(&receiver)? else {
            return Ok(());
        };
        let recorded = receiver.recorded();
        let mut checkpoint = self.checkpoint(receiver.here, target)?;
        checkpoint.listing = listing;
        let tried_listing = checkpoint.listing.is_some();
        let encoded = self.encoded(&mut checkpoint)?;
        if tried_listing && checkpoint.listing.is_none() {
            // Left out for its size: not tried again for a while.
            self.listing_sent = Some(Instant::now());
        }
        let raw = match encoded {
            Some(raw) => raw,
            None if target > recorded => self.encoded(&mut checkpoint)?.ok_or_else(|| {
                anyhow::anyhow!("the header at height {target} does not fit in a checkpoint")
            })?,
            None => anyhow::bail!("the directory region's listing does not fit in a checkpoint beside its header at height {target} ({MAX_SYSTEM_TX_BYTES} bytes)"),
        };
        // As the receiving regionchain will check it: the cheap checks under its state's lock,
        // the pairing after.
        self.into
            .region()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .check_checkpoint(&checkpoint, &[], Seals::Trust)?;
        verify_seal(&checkpoint.sealed, &checkpoint.cn_set)?;
        self.into.forward_txs(vec![raw])?;
        let now = Instant::now();
        if checkpoint.listing.is_some() {
            self.listing_sent = Some(now);
        }
        if target > recorded {
            self.sent = Some((target, now));
        }
        tracing::debug!(region = %self.region, height = %target, listing = checkpoint.listing.is_some(), "region checkpoint relayed");
        Ok(())
    }

    /// The height to checkpoint now and the listing it carries: the head again for the
    /// listing alone when it is the header recorded last, else the next height above the last
    /// recorded (with the listing when that is the head); none while a checkpoint sent is
    /// still waiting to be recorded or the head has not moved.
    fn next_checkpoint(
        &mut self,
        receiver: &Receiver,
    ) -> anyhow::Result<Option<(Height, Option<Listing>)>> {
        let recorded = receiver.recorded();
        let head = self.view.head().0;
        let listing_due = receiver.lacks_trust
            && self
                .listing_sent
                .is_none_or(|at| at.elapsed() >= RESEND_AFTER);
        let listing = match listing_due {
            true => self.listing_at(head)?,
            false => None,
        };
        if listing.is_some() && head == recorded {
            return Ok(Some((head, listing)));
        }
        let waiting = self
            .sent
            .is_some_and(|(h, at)| h > recorded && at.elapsed() < RESEND_AFTER);
        if waiting || head <= recorded {
            return Ok(None);
        }
        let target = self.target(recorded, head)?;
        Ok(target.map(|t| (t, listing.filter(|_| t == head))))
    }

    /// The receiving regionchain as this pass needs it, when it lists this region. Locks the
    /// receiving region's state, then this one's: no other thread holds one while waiting
    /// for the other (an RN's apply takes its own region's alone).
    fn receiver(&self) -> Option<Receiver> {
        let into = self.into.region().read().unwrap_or_else(|e| e.into_inner());
        into.listed(self.region)?;
        let from_directory = into
            .anchor
            .as_ref()
            .is_some_and(|a| a.region == self.region);
        let lacks_trust = from_directory && {
            let from = self.view.region().read().unwrap_or_else(|e| e.into_inner());
            into.lacks_trust_of(&from)
        };
        Some(Receiver {
            here: into.region,
            last: into.region_heads.get(&self.region).copied(),
            lacks_trust,
        })
    }

    /// This (directory) region's view of the platform, when its state now is the one the
    /// header at `head` commits to (the state may be a block ahead of the stored head: a later
    /// pass carries it then).
    fn listing_at(&self, head: Height) -> anyhow::Result<Option<Listing>> {
        let block = self
            .view
            .block_by_height(head)?
            .ok_or_else(|| anyhow::anyhow!("block {head} is not stored"))?;
        let committed = committed_state_root(block.header());
        let state = self.view.region().read().unwrap_or_else(|e| e.into_inner());
        let roots = state.roots();
        Ok((committed == Some(roots.state_root()))
            .then(|| Listing::of(roots, &state.directory, state.region_heads.values())))
    }

    /// `checkpoint` as a system transaction within the size limit; none when only its listing
    /// makes it too large (the listing is then taken out, logged, for the caller to send the
    /// header alone if that moves anything on).
    fn encoded(&self, checkpoint: &mut RegionCheckpoint) -> anyhow::Result<Option<Bytes>> {
        let height = checkpoint.sealed.header.height;
        let raw = checkpoint.to_system_tx();
        if raw.len() > MAX_SYSTEM_TX_BYTES && checkpoint.listing.take().is_some() {
            tracing::warn!(region = %self.region, %height, bytes = raw.len(), "the directory region's listing does not fit in a checkpoint beside its header; left out");
            return Ok(None);
        }
        anyhow::ensure!(
            raw.len() <= MAX_SYSTEM_TX_BYTES,
            "the header at height {height} makes a checkpoint of {} bytes, above the {MAX_SYSTEM_TX_BYTES}-byte system transaction limit",
            raw.len()
        );
        Ok(Some(raw))
    }

    /// Remembers the CN set in force at this region's head now.
    fn note_current_set(&mut self) {
        let state = self.view.region().read().unwrap_or_else(|e| e.into_inner());
        let set = &state.set;
        self.sets.entry(set.root()).or_insert_with(|| {
            (0..set.len() as u32)
                .filter_map(|i| set.key_bytes(crate::types::CnIndex(i)).ok().copied())
                .collect()
        });
    }

    /// The height to checkpoint above `recorded`: a header announcing a CN-set change first
    /// (the next checkpoint must be sealed by the announced set), else the furthest scanned.
    fn target(&mut self, recorded: Height, head: Height) -> anyhow::Result<Option<Height>> {
        if let Some(h) = self.announcing.filter(|&h| h > recorded) {
            return Ok(Some(h));
        }
        self.announcing = None;
        let from = self.scanned.max(recorded).next();
        let to = Height(head.0.min(from.0.saturating_add(SCAN_LIMIT - 1)));
        let mut h = from;
        while h <= to {
            let block = self
                .view
                .block_by_height(h)?
                .ok_or_else(|| anyhow::anyhow!("block {h} is not stored"))?;
            self.scanned = h;
            let next = &block.header().next_cn_set;
            if !next.is_empty() {
                // The announced set seals the headers after this one.
                self.sets.insert(set_root(next), next.clone());
                self.announcing = Some(h);
                return Ok(Some(h));
            }
            h = h.next();
        }
        Ok((self.scanned > recorded).then_some(self.scanned))
    }

    /// The checkpoint of this region's block at `height`, for the regionchain `directory`.
    fn checkpoint(
        &mut self,
        directory: ChainId,
        height: Height,
    ) -> anyhow::Result<RegionCheckpoint> {
        let block = self
            .view
            .block_by_height(height)?
            .ok_or_else(|| anyhow::anyhow!("block {height} is not stored"))?;
        let root = block.header().cn_set_root;
        if !self.sets.contains_key(&root) {
            self.learn_sets(root, height)?;
        }
        let cn_set = self.sets.get(&root).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "the CN set that sealed the region's height {height} is not known yet (the headers below it are read down for its announcement, {SCAN_LIMIT} a pass)"
            )
        })?;
        Ok(RegionCheckpoint {
            directory,
            sealed: block.sealed,
            cn_set,
            listing: None,
        })
    }

    /// Looks for the CN set `root` that sealed the header at `height`: the one announced by
    /// the highest header below it that announces one (an audited chain's headers agree). Reads
    /// down from `height - 1`, at most [`SCAN_LIMIT`] headers a pass, going on where the last
    /// pass looking for the same set stopped (its announcement lies below every header it
    /// sealed, so the search never needs to go back up): a relay started after a set change
    /// (whose announcing header the directory already recorded) finds the set sealing the
    /// headers after it.
    fn learn_sets(&mut self, root: B256, height: Height) -> anyhow::Result<()> {
        let mut h = match self.learning {
            Some((sought, next)) if sought == root => next.min(Height(height.0.saturating_sub(1))),
            _ => Height(height.0.saturating_sub(1)),
        };
        let mut read = 0;
        while h.0 >= 1 && read < SCAN_LIMIT {
            let block = self
                .view
                .block_by_height(h)?
                .ok_or_else(|| anyhow::anyhow!("block {h} is not stored"))?;
            let next = &block.header().next_cn_set;
            if !next.is_empty() {
                self.sets.insert(set_root(next), next.clone());
                self.learning = None;
                return Ok(());
            }
            h = Height(h.0 - 1);
            read += 1;
        }
        self.learning = (h.0 >= 1).then_some((root, h));
        Ok(())
    }
}

/// What one pass needs of the receiving regionchain.
struct Receiver {
    here: ChainId,
    /// Its last checkpoint of the relayed region.
    last: Option<RegionHead>,
    /// Whether it lacks some of the relayed (directory) region's view that matters
    /// ([`RegionState::lacks_trust_of`]).
    lacks_trust: bool,
}

impl Receiver {
    /// The height of its last checkpoint of the relayed region (0: none).
    fn recorded(&self) -> Height {
        self.last.map_or(Height(0), |l| l.height)
    }
}

/// The region an RN follows (its regionchain's id).
fn region_of(view: &RnView) -> ChainId {
    view.region()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .region
}

/// Fails when regionchain `state` records `region` (in its directory, or as the directory
/// region its genesis anchors) with a genesis other than `followed`; passes when it does not
/// record it.
fn check_recorded_genesis(
    state: &RegionState,
    region: ChainId,
    followed: B256,
) -> anyhow::Result<()> {
    let Some(entry) = state.listed(region) else {
        return Ok(());
    };
    anyhow::ensure!(
        entry.genesis_hash == followed,
        "region {region} is followed from genesis {followed}, but region {}'s regionchain records it with genesis {}: this node was given another platform's genesis file (or a forged one) for region {region}",
        state.region,
        entry.genesis_hash,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::region::RegionState;
    use crate::chain::region_checkpoint::tests::{cn_keys, entry, HERE, OTHER};
    use crate::consensus::selection::CnSet;
    use crate::crypto::bls::SecretKey;

    fn state(region: ChainId) -> RegionState {
        let keys = cn_keys("here");
        let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
        RegionState::new(region, Arc::new(set), 1)
    }

    #[test]
    fn a_region_lacks_the_listing_while_it_misses_an_entry_or_a_set_the_directory_followed() {
        let third = ChainId(OTHER.0 + crate::chain::directory::REGION_ID_SPAN);
        let listed = |region| crate::chain::directory::RegionEntry {
            region,
            ..entry(&cn_keys("third"))
        };
        let mut directory = state(HERE);
        directory.directory.insert(listed(OTHER));
        directory.directory.insert(listed(third));
        let mut other = state(OTHER).with_directory_anchor(Some(listed(HERE)));
        assert!(other.lacks_trust_of(&directory), "no entry copied yet");
        other.directory = directory.directory.clone();
        assert!(!other.lacks_trust_of(&directory));
        // The directory region follows the third region to another set.
        let head = |height, set: u8| RegionHead {
            region: third,
            height: Height(height),
            hash: crate::types::BlockHash(B256::repeat_byte(1)),
            set_root: B256::repeat_byte(set),
        };
        directory.region_heads.insert(third, head(40, 9));
        assert!(
            other.lacks_trust_of(&directory),
            "the set it trusts is behind"
        );
        // Taken, or followed further here already: nothing to send.
        other.region_heads.insert(third, head(40, 9));
        assert!(!other.lacks_trust_of(&directory));
        other.region_heads.insert(third, head(50, 8));
        assert!(!other.lacks_trust_of(&directory));
    }

    #[test]
    fn a_followed_genesis_must_be_the_one_the_receiving_regionchain_records() {
        let listed = entry(&cn_keys("other"));
        // The directory region's entry for another region.
        let mut directory = state(HERE);
        assert!(check_recorded_genesis(&directory, OTHER, B256::repeat_byte(9)).is_ok());
        directory.directory.insert(listed.clone());
        assert!(check_recorded_genesis(&directory, OTHER, listed.genesis_hash).is_ok());
        let error = check_recorded_genesis(&directory, OTHER, B256::repeat_byte(9)).unwrap_err();
        assert!(
            error.to_string().contains("another platform's genesis"),
            "{error}"
        );
        // Another region's anchor of the directory region it names.
        let anchor = crate::chain::directory::RegionEntry {
            region: HERE,
            ..listed
        };
        let other = state(OTHER).with_directory_anchor(Some(anchor.clone()));
        assert!(check_recorded_genesis(&other, HERE, anchor.genesis_hash).is_ok());
        assert!(check_recorded_genesis(&other, HERE, B256::repeat_byte(9)).is_err());
    }
}
