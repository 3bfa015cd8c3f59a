//! Dialog profiles (`set_dlg_profile`, `get_profile_size`, ...): which
//! profiles, with which values, each dialog is in, and how many dialogs a
//! profile (or a profile and value) holds. This version keeps them in the
//! tenant's memory; a dialog leaves its profiles when it ends
//! ([`Profiles::forget`]).
//!
//! The functions are async so a store shared by several nodes can answer
//! them without changing their callers.

use std::collections::HashMap;
use std::sync::Mutex;

use super::table::DialogId;

/// One membership: a profile and its value (`None`: a profile without
/// value).
type Membership = (String, Option<String>);

/// A tenant's profiles.
#[derive(Debug, Default)]
pub struct Profiles {
    members: Mutex<HashMap<DialogId, Vec<Membership>>>,
}

impl Profiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DialogId, Vec<Membership>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put `dialog` in `profile` (with `value`); once per profile and value.
    pub async fn add(&self, profile: &str, value: Option<&str>, dialog: DialogId) {
        let mut members = self.lock();
        let list = members.entry(dialog).or_default();
        let m = (profile.to_string(), value.map(str::to_string));
        if !list.contains(&m) {
            list.push(m);
        }
    }

    /// Take `dialog` out of `profile` (with `value`). False when it was
    /// not in it.
    pub async fn remove(&self, profile: &str, value: Option<&str>, dialog: DialogId) -> bool {
        let mut members = self.lock();
        let Some(list) = members.get_mut(&dialog) else {
            return false;
        };
        let before = list.len();
        list.retain(|(p, v)| !(p == profile && v.as_deref() == value));
        let removed = list.len() < before;
        if list.is_empty() {
            members.remove(&dialog);
        }
        removed
    }

    /// Whether `dialog` is in `profile` (with `value`; `None`: any value).
    pub async fn is_in(&self, profile: &str, value: Option<&str>, dialog: DialogId) -> bool {
        self.lock().get(&dialog).is_some_and(|list| {
            list.iter()
                .any(|(p, v)| p == profile && (value.is_none() || v.as_deref() == value))
        })
    }

    /// Dialogs in `profile` (with `value`; `None`: whatever their value).
    pub async fn size(&self, profile: &str, value: Option<&str>) -> usize {
        self.lock()
            .values()
            .filter(|list| {
                list.iter()
                    .any(|(p, v)| p == profile && (value.is_none() || v.as_deref() == value))
            })
            .count()
    }

    /// `dialog` ended: it leaves every profile.
    pub async fn forget(&self, dialog: DialogId) {
        self.lock().remove(&dialog);
    }

    /// The profiles `dialog` is in (for `dlg.list`).
    pub fn of(&self, dialog: DialogId) -> Vec<(String, Option<String>)> {
        self.lock().get(&dialog).cloned().unwrap_or_default()
    }
}
