//! A node's copy of its confirmed dialogs in the shared store
//! (`[dialog] backend = "redis"`), so that after a restart it finds them
//! again: calls in progress can still be ended by BYE, by `dlg.end_dlg`
//! or when their lifetime ends.
//!
//! Each confirmed dialog is saved as one [`Record`] (the table's
//! [`Dialog`] and its profile memberships, JSON) when it is confirmed and
//! when something that matters changes (lifetime, variables, flags,
//! properties, profiles, CSeq), and deleted when it ends. The hooks only
//! mark a dialog as *pending*; a writer task per tenant ([`writer`])
//! writes the pending ones a moment later, reading each from the table
//! then, so the last state is what is stored, in order, and no call ever
//! waits on Redis. A write that fails stays pending and is tried again
//! (one warning per outage, `kemibox_dialog_store_failures_total`
//! counting); past `max_pending` pending dialogs the writer instead
//! rewrites every record once Redis answers, as it does whenever the
//! profiles' heartbeat finds Redis lost this node's state.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kemibox_store::{DialogBackup, StoreError};
use serde::{Deserialize, Serialize};

use super::table::{Dialog, DialogId, Dialogs};
use crate::TenantState;
use crate::dialog_profiles::Profiles;

/// How long a change waits before the writer saves it (changes to one
/// dialog within it are written once).
const WRITE_EVERY: Duration = Duration::from_millis(100);

/// What is saved of one dialog.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub dialog: Dialog,
    /// Unix second its lifetime ends.
    pub expires: u64,
    /// Its profiles (and values): set again when it is restored.
    pub profiles: Vec<(String, Option<String>)>,
}

#[derive(Debug, Default)]
struct Pending {
    ids: BTreeSet<DialogId>,
    /// Too many were pending: rewrite every record.
    resync: bool,
}

/// Where a tenant's dialogs are saved, and what is still to write.
pub struct Backup {
    store: Arc<dyn DialogBackup>,
    /// This node's name: its records are its own.
    node: String,
    pending: Mutex<Pending>,
    /// Pending dialogs past which the writer rewrites everything instead.
    max_pending: usize,
    /// The last write failed (logged once until one works again).
    failing: AtomicBool,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup").field("node", &self.node).finish()
    }
}

impl Backup {
    /// Records of node `node` in `store`; at most `max_pending` dialogs
    /// remembered one by one while the store does not answer.
    pub fn new(store: Arc<dyn DialogBackup>, node: &str, max_pending: usize) -> Backup {
        Backup {
            store,
            node: node.to_string(),
            pending: Mutex::new(Pending::default()),
            max_pending: max_pending.max(1),
            failing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rewrite every record at the next flush (Redis may have lost them).
    pub fn resync_all(&self) {
        let mut pending = self.lock();
        pending.ids.clear();
        pending.resync = true;
    }

    /// Dialog `id` changed or ended: its record is to be written.
    pub fn touch(&self, id: DialogId) {
        let mut pending = self.lock();
        if pending.resync {
            return;
        }
        pending.ids.insert(id);
        if pending.ids.len() > self.max_pending {
            pending.ids.clear();
            pending.resync = true;
        }
    }

    /// The store failed: counted, logged once per outage.
    fn failed(&self, tenant: &str, profiles: &Profiles, e: &StoreError) {
        profiles.metrics().failures.inc();
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(tenant, node = %self.node, error = %e, "dialog records: Redis failed; calls go on, their records are written once it answers");
        }
    }

    /// Write one dialog's record (or delete it when it is no longer
    /// confirmed in `table`).
    async fn write(
        &self,
        tenant: &str,
        table: &Dialogs,
        profiles: &Profiles,
        id: DialogId,
    ) -> Result<(), StoreError> {
        let key = id.to_string();
        match table.snapshot(id, Instant::now()) {
            Some((dialog, expires)) => {
                let record = Record {
                    dialog,
                    expires,
                    profiles: profiles.memberships_of(&key),
                };
                let text = serde_json::to_string(&record).map_err(|e| StoreError::Unavailable {
                    backend: "redis",
                    detail: format!("dialog {key}: {e}"),
                })?;
                self.store.save(tenant, &self.node, &key, &text).await
            }
            None => self
                .store
                .delete(tenant, &self.node, &key)
                .await
                .map(|_| ()),
        }
    }

    /// Every record rewritten from the table: those of dialogs it no
    /// longer has confirmed deleted.
    async fn resync(
        &self,
        tenant: &str,
        table: &Dialogs,
        profiles: &Profiles,
    ) -> Result<(), StoreError> {
        let saved = self.store.load_all(tenant, &self.node).await?;
        let live: BTreeSet<DialogId> = table
            .list()
            .iter()
            .filter(|d| d.state.confirmed())
            .map(|d| d.id)
            .collect();
        let live_keys: BTreeSet<String> = live.iter().map(ToString::to_string).collect();
        for (key, _) in saved.iter().filter(|(k, _)| !live_keys.contains(k)) {
            self.store.delete(tenant, &self.node, key).await?;
        }
        for id in live {
            self.write(tenant, table, profiles, id).await?;
        }
        Ok(())
    }

    /// Write what is pending; what fails stays pending.
    pub async fn flush(&self, tenant: &str, table: &Dialogs, profiles: &Profiles) {
        let (ids, resync) = {
            let mut pending = self.lock();
            (
                std::mem::take(&mut pending.ids),
                std::mem::take(&mut pending.resync),
            )
        };
        if resync && let Err(e) = self.resync(tenant, table, profiles).await {
            self.lock().resync = true;
            return self.failed(tenant, profiles, &e);
        }
        let wrote = resync || !ids.is_empty();
        let mut left = ids.into_iter();
        while let Some(id) = left.next() {
            if let Err(e) = self.write(tenant, table, profiles, id).await {
                for id in std::iter::once(id).chain(left) {
                    self.touch(id);
                }
                return self.failed(tenant, profiles, &e);
            }
        }
        if wrote && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(tenant, node = %self.node, "dialog records: Redis answers again; pending records written");
        }
    }

    /// This node's saved dialogs back into `table`, their calls counted
    /// and their profiles set again in `profiles`; how many. A record
    /// that cannot be read is logged and deleted.
    pub async fn restore(&self, tenant: &str, table: &Dialogs, profiles: &Profiles) -> usize {
        let records = match self.store.load_all(tenant, &self.node).await {
            Ok(r) => r,
            Err(e) => {
                self.failed(tenant, profiles, &e);
                return 0;
            }
        };
        let now = Instant::now();
        let mut restored = 0;
        for (key, text) in records {
            let record: Record = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(tenant, node = %self.node, dialog = %key, "dialog record unreadable, deleted: {e}");
                    if let Err(e) = self.store.delete(tenant, &self.node, &key).await {
                        self.failed(tenant, profiles, &e);
                    }
                    continue;
                }
            };
            let id = record.dialog.id.to_string();
            if !table.restore(record.dialog, Some(record.expires), now) {
                continue;
            }
            restored += 1;
            if let Err(e) = profiles.call_started(&id).await {
                tracing::warn!(tenant, dialog = %id, "restored dialog not counted: {e}");
            }
            for (profile, value) in record.profiles {
                if let Err(e) = profiles.add(&profile, value.as_deref(), &id).await {
                    tracing::warn!(tenant, dialog = %id, profile, "restored dialog not put back in its profile: {e}");
                }
            }
        }
        restored
    }
}

/// The writer of `state`'s dialog records, for as long as it is held.
/// When the profiles' heartbeat writes this node's memberships again
/// (Redis restarted empty, an outage, this node's start), every record is
/// rewritten too.
pub async fn writer(tenant: String, state: Weak<TenantState>) {
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resyncs = 0;
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let Some(backup) = state.dialog.backup() else {
            return;
        };
        let now = state.profiles.metrics().resyncs.get();
        if now != resyncs {
            resyncs = now;
            backup.resync_all();
        }
        backup
            .flush(&tenant, &state.dialog.table, &state.profiles)
            .await;
    }
}
