//! The catalog: tenants, namespaces and their generations.
//!
//! A namespace is a (tenant, model, revision, layout); its blocks are those
//! of its current *generation*. Dropping it raises the generation, in O(1):
//! nothing of the old generation is served from then on, and its pages,
//! table slots and index entries are freed lazily (the sweep in
//! [`super::maintain`], the index's compaction filter, segment reclaim).
//!
//! Invariants:
//! - **Index first, memory second.** A creation or drop writes the
//!   namespace's registry record (and, with encryption at rest, creates or
//!   deletes its data key in the same synced batch) before the state
//!   changes, all under `namespace_admin` ([`Inner::admin_lock`]), which
//!   serialises creations and drops and is held across that one RocksDB
//!   write; the state lock is not.
//! - **Crypto-erasure.** A dropped namespace's data key is destroyed in the
//!   same write that records the drop, before any of its blocks is freed.
//! - Every other module reaches a namespace through [`live_slot`], which
//!   refuses a dropped one.
//!
//! May touch: the state's tenants and namespaces (`tenants`,
//! `tenant_by_name`, `namespaces`, `ns_by_id`), never a block; the index's
//! meta column, its liveness, and the keyring.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, MutexGuard, PoisonError};

use pagoda_formats::chain::{ChainHash, ChainHasher, ChainKey};
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_formats::registry::{self, NamespaceRecord};

use super::ssd::{Ssd, liveness};
use super::{Engine, Inner, NamespaceInfo, hex};
use crate::error::{Error, Result};
use crate::keys::Keyring;
use crate::options::{EngineOptions, TenantConfig, limits};
use crate::state::{NsSlot, State, TenantState};
use crate::stats::NsCounters;

/// Meta-column key prefix of the namespace registry.
const NAMESPACE_PREFIX: &[u8] = registry::NAMESPACE_KEY_PREFIX;

impl Engine {
    /// Adds or updates a tenant (secret and quotas).
    pub fn set_tenant(&self, tenant: TenantConfig) -> Result<()> {
        let mut state = self.inner.lock();
        add_tenant(&mut state, &self.inner.options, tenant)
    }

    /// The engine's number for a tenant (what [`BlockEvent::tenant`] holds),
    /// or `None` for a tenant not configured. Numbers never change while the
    /// engine is open.
    ///
    /// [`BlockEvent::tenant`]: crate::BlockEvent::tenant
    pub fn tenant_index(&self, name: &str) -> Option<u16> {
        self.inner.lock().tenant_by_name.get(name).copied()
    }

    /// Creates a namespace (idempotent: an existing live namespace is kept;
    /// a dropped one comes back empty, with a new generation).
    pub fn create_namespace(&self, namespace: &Namespace) -> Result<NamespaceId> {
        let id = namespace.id();
        let _admin = self.inner.admin_lock();
        let (generation, record) = {
            let state = self.inner.lock();
            let tenant = *state
                .tenant_by_name
                .get(namespace.tenant())
                .ok_or_else(|| Error::UnknownTenant(namespace.tenant().to_owned()))?;
            let _ = tenant;
            match state.ns_by_id.get(&id) {
                Some(&slot) if !state.namespaces[slot as usize].dropped => return Ok(id),
                Some(&slot) => {
                    let generation = state.namespaces[slot as usize].generation;
                    (generation, namespace_record(generation, false, namespace))
                }
                None => {
                    if state.namespaces.len() >= limits::NAMESPACES_MAX {
                        return Err(Error::ResourceExhausted(format!(
                            "at most {} namespaces",
                            limits::NAMESPACES_MAX
                        )));
                    }
                    (1, namespace_record(1, false, namespace))
                }
            }
        };
        if let Some(ssd) = &self.inner.ssd {
            write_namespace(ssd, namespace, generation, &record)?;
        }
        let mut state = self.inner.lock();
        register_namespace(&mut state, namespace.clone(), generation, false);
        Ok(id)
    }

    /// Drops a namespace in O(1): its generation goes up, so no lookup or
    /// get sees its blocks again; DRAM pages, index entries and log space
    /// come back lazily. With encryption at rest its data key is destroyed
    /// first, in the same synced index write: its SSD blocks are unreadable
    /// from then on, before any reclaim (crypto-erasure). Returns whether
    /// it existed.
    pub fn drop_namespace(&self, id: &NamespaceId) -> Result<bool> {
        Ok(self.drop_namespaces(|slot| slot.id == *id)? > 0)
    }

    /// Drops every live namespace of `tenant` ([`Engine::drop_namespace`]
    /// for all of them, in one atomic, synced index write that also destroys
    /// their data keys). The tenant stays configured. Returns how many
    /// namespaces were dropped.
    pub fn drop_tenant(&self, tenant: &str) -> Result<usize> {
        self.drop_namespaces(|slot| slot.namespace.tenant() == tenant)
    }

    /// Drops the live namespaces `which` picks: the registry records (and
    /// the data keys' deletion) go to the index first, synced, in one
    /// batch; then the generations rise in memory; then, with encryption,
    /// the index's files are rewritten without the old wrapped keys.
    fn drop_namespaces(&self, which: impl Fn(&NsSlot) -> bool) -> Result<usize> {
        let _admin = self.inner.admin_lock();
        let dropped: Vec<(NamespaceId, u64, Namespace)> = {
            let state = self.inner.lock();
            state
                .namespaces
                .iter()
                .filter(|slot| !slot.dropped && which(slot))
                .map(|slot| (slot.id, slot.generation + 1, slot.namespace.clone()))
                .collect()
        };
        if dropped.is_empty() {
            return Ok(0);
        }
        if let Some(ssd) = &self.inner.ssd {
            let records: Vec<(Vec<u8>, Vec<u8>)> = dropped
                .iter()
                .map(|(id, generation, namespace)| {
                    (
                        namespace_key(id),
                        namespace_record(*generation, true, namespace),
                    )
                })
                .collect();
            let puts: Vec<(&[u8], &[u8])> = records
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_slice()))
                .collect();
            let key_keys: Vec<Vec<u8>> = match &ssd.keys {
                Some(_) => dropped
                    .iter()
                    .map(|(id, ..)| crate::keys::data_key_key(id))
                    .collect(),
                None => Vec::new(),
            };
            let deletes: Vec<&[u8]> = key_keys.iter().map(Vec::as_slice).collect();
            ssd.index.write_meta(&puts, &deletes, true)?;
            if let Some(keys) = &ssd.keys {
                for (id, ..) in &dropped {
                    keys.forget(id);
                }
            }
        }
        let liveness = {
            let mut state = self.inner.lock();
            for (id, generation, _) in &dropped {
                let slot = state.ns_by_id[id];
                state.retire_generation(slot, *generation);
            }
            self.inner
                .ssd
                .as_ref()
                .map(|ssd| liveness(&state, &ssd.wal))
        };
        if let (Some(ssd), Some(liveness)) = (&self.inner.ssd, liveness) {
            ssd.index.set_liveness(liveness);
            if ssd.keys.is_some() {
                // Defence in depth: the keys are gone from the index's view
                // already; this takes their bytes out of its files too.
                if let Err(error) = ssd.index.purge_meta() {
                    tracing::warn!(%error, "rewriting the index without the dropped data keys");
                }
                for (id, ..) in &dropped {
                    tracing::info!(namespace = %hex(id), "data key destroyed: the namespace's SSD blocks are unreadable");
                }
            }
        }
        Ok(dropped.len())
    }

    /// Live namespaces.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        let state = self.inner.lock();
        state
            .namespaces
            .iter()
            .filter(|slot| !slot.dropped)
            .map(|slot| NamespaceInfo {
                id: slot.id,
                namespace: slot.namespace.clone(),
                generation: slot.generation,
            })
            .collect()
    }

    /// One page of the live namespaces of `tenant`, in id order: the first
    /// `count` whose ids come after `after` (from the first when `None`),
    /// and whether more follow. Paging by id stays correct while namespaces
    /// come and go: one that lives through the whole listing is listed
    /// exactly once. Costs one pass over the namespaces under the state
    /// lock, keeping only `count + 1` of them.
    pub fn namespaces_page(
        &self,
        tenant: &str,
        after: Option<&NamespaceId>,
        count: usize,
    ) -> (Vec<NamespaceInfo>, bool) {
        let state = self.inner.lock();
        // The `count + 1` smallest ids past `after`; the extra one only says
        // that another page follows.
        let mut page: BTreeMap<NamespaceId, usize> = BTreeMap::new();
        for (index, slot) in state.namespaces.iter().enumerate() {
            if slot.dropped
                || slot.namespace.tenant() != tenant
                || after.is_some_and(|after| slot.id <= *after)
            {
                continue;
            }
            page.insert(slot.id, index);
            if page.len() > count + 1 {
                page.pop_last();
            }
        }
        let more = page.len() > count;
        let infos = page
            .into_values()
            .take(count)
            .map(|index| {
                let slot = &state.namespaces[index];
                NamespaceInfo {
                    id: slot.id,
                    namespace: slot.namespace.clone(),
                    generation: slot.generation,
                }
            })
            .collect();
        (infos, more)
    }

    /// A live namespace.
    pub fn namespace(&self, id: &NamespaceId) -> Option<NamespaceInfo> {
        let state = self.inner.lock();
        let slot = live_slot(&state, id).ok()?;
        let slot = &state.namespaces[slot as usize];
        Some(NamespaceInfo {
            id: slot.id,
            namespace: slot.namespace.clone(),
            generation: slot.generation,
        })
    }

    /// The chain key of a namespace (derived from its tenant's secret).
    pub fn chain_key(&self, id: &NamespaceId) -> Result<ChainKey> {
        let state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        Ok(state.namespaces[slot as usize].chain_key.clone())
    }

    /// The chain hashes of the full blocks of `tokens`, hashed from the root
    /// with the namespace's chain key.
    pub fn hash_tokens(&self, id: &NamespaceId, tokens: &[u32]) -> Result<Vec<ChainHash>> {
        let (key, block_tokens) = {
            let state = self.inner.lock();
            let slot = &state.namespaces[live_slot(&state, id)? as usize];
            (slot.chain_key.clone(), slot.namespace.layout().block_tokens)
        };
        Ok(pagoda_formats::chain::hash_tokens(&key, block_tokens, tokens)?.hashes)
    }

    /// The chain hash of the block of `tokens` (exactly one block) after
    /// `parent`, with `extra` (LoRA ids, media hashes; may be empty).
    pub fn block_hash(
        &self,
        id: &NamespaceId,
        parent: &ChainHash,
        tokens: &[u32],
        extra: &[u8],
    ) -> Result<ChainHash> {
        let (key, block_tokens) = {
            let state = self.inner.lock();
            let slot = &state.namespaces[live_slot(&state, id)? as usize];
            (slot.chain_key.clone(), slot.namespace.layout().block_tokens)
        };
        let mut hasher = ChainHasher::resume(key, block_tokens, *parent, 1)?;
        Ok(hasher.push_block(tokens, extra)?)
    }
}

impl Inner {
    /// The lock of namespace creation and drops (`namespace_admin`).
    fn admin_lock(&self) -> MutexGuard<'_, ()> {
        self.namespace_admin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) fn live_slot(state: &State, id: &NamespaceId) -> Result<u32> {
    match state.ns_by_id.get(id) {
        Some(&slot) if !state.namespaces[slot as usize].dropped => Ok(slot),
        _ => Err(Error::UnknownNamespace(hex(id))),
    }
}

pub(super) fn add_tenant(
    state: &mut State,
    options: &EngineOptions,
    tenant: TenantConfig,
) -> Result<()> {
    pagoda_formats::namespace::validate_name(
        pagoda_formats::NameField::Tenant,
        tenant.name.as_bytes(),
    )?;
    if let Some(&index) = state.tenant_by_name.get(&tenant.name) {
        let existing = &mut state.tenants[index as usize];
        let secret_changed = existing.config.secret.as_bytes() != tenant.secret.as_bytes();
        existing.config = tenant;
        if secret_changed {
            for slot in &mut state.namespaces {
                if slot.tenant == index {
                    slot.chain_key = ChainKey::derive(&slot.id, &existing.config.secret);
                }
            }
        }
        return Ok(());
    }
    if state.tenants.len() >= limits::TENANTS_MAX {
        return Err(Error::ResourceExhausted(format!(
            "at most {} tenants",
            limits::TENANTS_MAX
        )));
    }
    let index = u16::try_from(state.tenants.len()).expect("bounded by TENANTS_MAX");
    state.tenant_by_name.insert(tenant.name.clone(), index);
    state.tenants.push(TenantState {
        config: tenant,
        policy: options.policy.build(),
        dram_bytes: 0,
        ssd_bytes: 0,
        pinned_bytes: 0,
        dram_blocks: 0,
        ssd_blocks: 0,
        ssd_fifo: VecDeque::new(),
    });
    Ok(())
}

fn namespace_key(id: &NamespaceId) -> Vec<u8> {
    registry::namespace_key(id).to_vec()
}

fn namespace_record(generation: u64, dropped: bool, namespace: &Namespace) -> Vec<u8> {
    NamespaceRecord {
        generation,
        dropped,
        namespace: namespace.clone(),
    }
    .encode()
}

/// Writes a live namespace's registry record and, with encryption at rest,
/// a new data key for `generation` in the same synced batch; the key is
/// installed once it is durable.
fn write_namespace(ssd: &Ssd, namespace: &Namespace, generation: u64, record: &[u8]) -> Result<()> {
    let id = namespace.id();
    let registry_key = namespace_key(&id);
    let Some(keys) = &ssd.keys else {
        return ssd.index.put_meta(&registry_key, record, true);
    };
    let (key, wrapped) = keys.new_data_key(namespace, generation)?;
    let key_key = crate::keys::data_key_key(&id);
    ssd.index
        .write_meta(&[(&registry_key, record), (&key_key, &wrapped)], &[], true)?;
    keys.install(id, key);
    Ok(())
}

fn register_namespace(state: &mut State, namespace: Namespace, generation: u64, dropped: bool) {
    let id = namespace.id();
    let tenant = state.tenant_by_name.get(namespace.tenant()).copied();
    let (tenant, chain_key) = match tenant {
        Some(tenant) => (
            tenant,
            ChainKey::derive(&id, &state.tenants[tenant as usize].config.secret),
        ),
        // A namespace on disk whose tenant is not configured: kept (its blocks
        // stay on disk) but dropped from view until the tenant comes back.
        None => return,
    };
    if let Some(&slot) = state.ns_by_id.get(&id) {
        let entry = &mut state.namespaces[slot as usize];
        entry.generation = generation;
        entry.dropped = dropped;
        entry.chain_key = chain_key;
        return;
    }
    let slot = u32::try_from(state.namespaces.len()).expect("bounded by NAMESPACES_MAX");
    state.ns_by_id.insert(id, slot);
    state.namespaces.push(NsSlot {
        id,
        namespace,
        tenant,
        generation,
        dropped,
        chain_key,
        counters: Arc::new(NsCounters::default()),
        block_count: 0,
    });
}

/// Registers the namespaces of the index and, with encryption at rest,
/// loads the data key of each live one ([`load_data_key`]).
pub(super) fn load_namespaces(ssd: &Ssd, state: &mut State) -> Result<()> {
    let index = &ssd.index;
    for (key, value) in index.meta_with_prefix(NAMESPACE_PREFIX)? {
        let NamespaceRecord {
            generation,
            dropped,
            namespace,
        } = crate::index::decode_namespace_record(&key, &value)?;
        let known = state.tenant_by_name.contains_key(namespace.tenant());
        let generation = match &ssd.keys {
            Some(keys) if known && !dropped => load_data_key(ssd, keys, &namespace, generation)?,
            _ => generation,
        };
        register_namespace(state, namespace, generation, dropped);
    }
    if let Some(keys) = &ssd.keys {
        tracing::info!(
            data_keys = keys.len(),
            "encryption at rest is on (AES-256-GCM): SSD blocks are sealed with per-namespace data keys"
        );
    }
    Ok(())
}

/// Installs the data key of a live namespace at `generation`; returns the
/// generation to register it with. A namespace without a usable key (made
/// before encryption was turned on, or whose key entry is damaged) gets a
/// new key and the next generation: its old blocks are dropped, as by a
/// drop and create, since they cannot be served as encrypted ones.
fn load_data_key(ssd: &Ssd, keys: &Keyring, namespace: &Namespace, generation: u64) -> Result<u64> {
    let id = namespace.id();
    let problem = match ssd.index.get_meta(&crate::keys::data_key_key(&id))? {
        None => "it has no data key (it was created while encryption was off)".to_owned(),
        Some(wrapped) => match keys.unwrap(namespace, &wrapped) {
            Ok(key) if key.generation() == generation => {
                keys.install(id, Arc::new(key));
                return Ok(generation);
            }
            Ok(key) => format!(
                "its data key is of generation {}, not {generation}",
                key.generation()
            ),
            Err(error) => error.to_string(),
        },
    };
    let renewed = generation + 1;
    tracing::warn!(namespace = %hex(&id), %problem, generation = renewed,
        "namespace gets a new data key and generation: its blocks so far are dropped \
         (plaintext ones stay in the log until their segments are reclaimed)");
    write_namespace(
        ssd,
        namespace,
        renewed,
        &namespace_record(renewed, false, namespace),
    )?;
    Ok(renewed)
}
