//! The dialog profile keys of `[dialog]` and `[tenant.dialog]` (Kamailio's
//! dialog parameters `profiles_with_value` and `profiles_no_value`), where
//! a tenant's memberships live, and this node's name and heartbeat for
//! the shared store. Each key comes from the tenant's own table, else the
//! top level's, else the default, and is checked where it was given.
//!
//! ```toml
//! [dialog]
//! profiles_with_value = ["caller"]   # set_dlg_profile("caller", $fU)
//! profiles_no_value = ["inbound"]    # set_dlg_profile("inbound")
//! backend = "redis"                  # share with the other nodes (needs [database] redis)
//! max_memberships = 100000           # per tenant, on this node
//! node = "sip1"                      # top level only: this node's name (default: the host name)
//! node_ttl = 15                      # top level only: seconds a silent node's calls still count
//! ```

use std::time::Duration;

use kemibox_kemi::dialog_profiles::{DEFAULT_MAX_MEMBERSHIPS, DEFAULT_NODE_TTL, ProfileSpecs};

use super::dialog::{DialogTable, pick};
use super::locate::Problem;
use super::schema::SpannedList;
use super::validate::{Checked, Scope};

/// A tenant's profile settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogProfiles {
    pub specs: ProfileSpecs,
    /// Memberships shared through `[database] redis`.
    pub redis: bool,
    pub max_memberships: usize,
}

impl Default for DialogProfiles {
    fn default() -> DialogProfiles {
        DialogProfiles {
            specs: ProfileSpecs::default(),
            redis: false,
            max_memberships: DEFAULT_MAX_MEMBERSHIPS,
        }
    }
}

/// This process as one node of those sharing a Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogNode {
    pub name: String,
    pub ttl: Duration,
}

impl Default for DialogNode {
    fn default() -> DialogNode {
        DialogNode {
            name: host_name(),
            ttl: DEFAULT_NODE_TTL,
        }
    }
}

/// The machine's name (the default node name), else "kemibox".
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| valid_name(h))
        .unwrap_or_else(|| "kemibox".into())
}

/// Profile and node names: letters, digits, `_`, `-`, `.`, at most 64.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The merged and checked profile settings of a tenant (`own`: its
/// `[tenant.dialog]` and scope; `None` for the default tenant). `redis`:
/// whether `[database] redis` is set.
pub fn settings(
    top: Option<&DialogTable>,
    own: Option<(Scope<'_>, &DialogTable)>,
    redis: bool,
) -> Checked<DialogProfiles> {
    if let Some((scope, t)) = own {
        let at = match (&t.node, &t.node_ttl) {
            (Some(v), _) => Some(("node", scope.at("dialog.node", v))),
            (None, Some(v)) => Some(("node_ttl", scope.at("dialog.node_ttl", v))),
            (None, None) => None,
        };
        if let Some((key, at)) = at {
            return Err(Problem::new(
                at,
                format!(
                    "{}dialog: {key} is the process's, not a tenant's",
                    scope.label()
                ),
                format!("move {key} to the top-level [dialog] table"),
            ));
        }
    }
    let mut out = DialogProfiles::default();
    let mut seen: Vec<String> = Vec::new();
    for (key, get, with_value) in [
        (
            "profiles_with_value",
            (|t| t.profiles_with_value.as_ref()) as fn(&DialogTable) -> Option<&SpannedList>,
            true,
        ),
        ("profiles_no_value", |t| t.profiles_no_value.as_ref(), false),
    ] {
        let Some((scope, list)) = pick(top, own, get) else {
            continue;
        };
        for name in list.get_ref() {
            let at = || scope.at(&format!("dialog.{key}"), name);
            let n = name.get_ref();
            if !valid_name(n) {
                return Err(Problem::new(
                    at(),
                    format!(
                        "{}dialog: {key} has {n:?}, not a profile name",
                        scope.label()
                    ),
                    "use letters, digits, '_', '-' and '.' (at most 64), e.g. \"caller\"",
                ));
            }
            if seen.contains(n) {
                return Err(Problem::new(
                    at(),
                    format!("{}dialog: profile {n:?} is declared twice", scope.label()),
                    "declare each profile once, in profiles_with_value or in profiles_no_value",
                ));
            }
            seen.push(n.clone());
            if with_value {
                out.specs.with_value.push(n.clone());
            } else {
                out.specs.no_value.push(n.clone());
            }
        }
    }
    if let Some((scope, backend)) = pick(top, own, |t| t.backend.as_ref()) {
        let at = || scope.at("dialog.backend", backend);
        match backend.get_ref().as_str() {
            "memory" => {}
            "redis" if redis => out.redis = true,
            "redis" => {
                return Err(Problem::new(
                    at(),
                    format!(
                        "{}dialog: backend = \"redis\" without a Redis server",
                        scope.label()
                    ),
                    "add redis = \"redis://HOST:6379/\" to [database], or remove backend",
                ));
            }
            other => {
                return Err(Problem::new(
                    at(),
                    format!("{}dialog: backend = {other:?} is not known", scope.label()),
                    "give \"memory\" (the default) or \"redis\"",
                ));
            }
        }
    }
    if let Some((scope, max)) = pick(top, own, |t| t.max_memberships.as_ref()) {
        match usize::try_from(*max.get_ref())
            .ok()
            .filter(|m| (1..=10_000_000).contains(m))
        {
            Some(m) => out.max_memberships = m,
            None => {
                return Err(Problem::new(
                    scope.at("dialog.max_memberships", max),
                    format!(
                        "{}dialog: max_memberships = {} is out of range",
                        scope.label(),
                        max.get_ref()
                    ),
                    "give a number from 1 to 10000000, or remove it (default 100000)",
                ));
            }
        }
    }
    Ok(out)
}

/// This node's name and ttl from the top-level `[dialog]`.
pub fn node(top: Option<&DialogTable>) -> Checked<DialogNode> {
    let mut out = DialogNode::default();
    let Some(top) = top else {
        return Ok(out);
    };
    if let Some(name) = &top.node {
        if !valid_name(name.get_ref()) {
            return Err(Problem::new(
                Scope::Top.at("dialog.node", name),
                format!("dialog: node = {:?} is not a node name", name.get_ref()),
                "use letters, digits, '_', '-' and '.' (at most 64), unique among the nodes sharing the Redis",
            ));
        }
        out.name = name.get_ref().clone();
    }
    if let Some(ttl) = &top.node_ttl {
        match u64::try_from(*ttl.get_ref())
            .ok()
            .filter(|t| (1..=3600).contains(t))
        {
            Some(t) => out.ttl = Duration::from_secs(t),
            None => {
                return Err(Problem::new(
                    Scope::Top.at("dialog.node_ttl", ttl),
                    format!("dialog: node_ttl = {} is out of range", ttl.get_ref()),
                    "give seconds from 1 to 3600, or remove it (default 15)",
                ));
            }
        }
    }
    Ok(out)
}
