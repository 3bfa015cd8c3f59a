//! `[dialog]` and `[tenant.dialog]`: the dialog module's settings
//! (Kamailio's dialog parameters of the same names), and the tenant's
//! concurrent-call quota, `max_calls` in `[limits]` / `[tenant.limits]`.
//! Each key comes from the tenant's own table, else the top level's, else
//! the default, and is checked where it was given.
//!
//! ```toml
//! [limits]
//! max_calls = 100              # concurrent calls; an INVITE over it is refused
//!
//! [dialog]
//! default_timeout = 43200      # seconds a confirmed dialog lives
//! max_dialogs = 100000         # dialogs tracked at most per tenant
//! send_bye = true              # BYE to both sides when the lifetime ends
//! ka_interval = 0              # seconds between in-dialog OPTIONS (0: none)
//! ka_failed_limit = 1          # failed keep-alives that end the call
//! max_calls_reply = { code = 503, reason = "Too Many Calls" }
//! ```

use kemibox_kemi::dialog::DialogSettings;
use serde::Deserialize;
use toml::Spanned;

use super::locate::Problem;
use super::schema::{LimitsTable, Reply, SpannedList};
use super::validate::{Checked, Scope};

/// `[dialog]` and `[tenant.dialog]` as written: the dialog module's keys,
/// then the profiles' (read by config/dialog_profiles.rs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialogTable {
    pub default_timeout: Option<Spanned<i64>>,
    pub max_dialogs: Option<Spanned<i64>>,
    pub send_bye: Option<bool>,
    pub ka_interval: Option<Spanned<i64>>,
    pub ka_failed_limit: Option<Spanned<i64>>,
    pub max_calls_reply: Option<Reply>,
    // Profiles and where they live: config/dialog_profiles.rs.
    pub profiles_with_value: Option<SpannedList>,
    pub profiles_no_value: Option<SpannedList>,
    pub backend: Option<Spanned<String>>,
    pub max_memberships: Option<Spanned<i64>>,
    pub node: Option<Spanned<String>>,
    pub node_ttl: Option<Spanned<i64>>,
}

/// A key's value from the tenant's table, else the top level's.
pub(super) fn pick<'a, Table, T>(
    top: Option<&'a Table>,
    own: Option<(Scope<'a>, &'a Table)>,
    get: fn(&Table) -> Option<&T>,
) -> Option<(Scope<'a>, &'a T)> {
    own.and_then(|(scope, t)| get(t).map(|v| (scope, v)))
        .or_else(|| top.and_then(|t| get(t).map(|v| (Scope::Top, v))))
}

/// A whole number of `key` from `min` to `max`.
fn number(
    key: &str,
    given: Option<(Scope<'_>, &Spanned<i64>)>,
    (min, max): (i64, i64),
    default: i64,
) -> Checked<i64> {
    let Some((scope, v)) = given else {
        return Ok(default);
    };
    let n = *v.get_ref();
    if (min..=max).contains(&n) {
        return Ok(n);
    }
    Err(Problem::new(
        scope.at(key, v),
        format!("{}{key} = {n} is out of range", scope.label()),
        format!("give a number from {min} to {max}, or remove it for the default ({default})"),
    ))
}

/// The merged and checked settings of a tenant (`own`: its
/// `[tenant.dialog]` and `[tenant.limits]` with its scope; `None` for the
/// default tenant).
pub fn settings(
    top: (Option<&DialogTable>, &LimitsTable),
    own: Option<(Scope<'_>, Option<&DialogTable>, &LimitsTable)>,
) -> Checked<DialogSettings> {
    let d = DialogSettings::default();
    let own_dialog = own.and_then(|(s, t, _)| t.map(|t| (s, t)));
    let own_limits = own.map(|(s, _, l)| (s, l));
    let max_calls = match pick(Some(top.1), own_limits, |l| l.max_calls.as_ref()) {
        Some((scope, v)) if *v.get_ref() == 0 => {
            return Err(Problem::new(
                scope.at("limits.max_calls", v),
                format!(
                    "{}limits: max_calls = 0 would refuse every call",
                    scope.label()
                ),
                "give at least 1, or remove it for no limit",
            ));
        }
        Some((_, v)) => Some(*v.get_ref()),
        None => None,
    };
    let max_calls_reply = match pick(top.0, own_dialog, |t| t.max_calls_reply.as_ref()) {
        Some((scope, r)) => {
            let code = *r.code.get_ref();
            if !(300..700).contains(&code) {
                return Err(Problem::new(
                    scope.at("dialog.max_calls_reply.code", &r.code),
                    format!(
                        "{}dialog: max_calls_reply code {code} is not a negative final reply",
                        scope.label()
                    ),
                    "give a code from 300 to 699 (503 by default)",
                ));
            }
            (code, r.reason.clone())
        }
        None => d.max_calls_reply.clone(),
    };
    let timeout = number(
        "dialog.default_timeout",
        pick(top.0, own_dialog, |t| t.default_timeout.as_ref()),
        (1, i64::from(u32::MAX)),
        i64::from(d.default_timeout),
    )?;
    let max_dialogs = number(
        "dialog.max_dialogs",
        pick(top.0, own_dialog, |t| t.max_dialogs.as_ref()),
        (1, 10_000_000),
        d.max_dialogs as i64,
    )?;
    let ka_interval = number(
        "dialog.ka_interval",
        pick(top.0, own_dialog, |t| t.ka_interval.as_ref()),
        (0, 86_400),
        0,
    )?;
    let ka_failed_limit = number(
        "dialog.ka_failed_limit",
        pick(top.0, own_dialog, |t| t.ka_failed_limit.as_ref()),
        (1, 1000),
        i64::from(d.ka_failed_limit),
    )?;
    Ok(DialogSettings {
        default_timeout: timeout as u32,
        max_dialogs: max_dialogs as usize,
        send_bye: pick(top.0, own_dialog, |t| t.send_bye.as_ref()).map_or(d.send_bye, |(_, b)| *b),
        ka_interval: ka_interval as u32,
        ka_failed_limit: ka_failed_limit as u32,
        max_calls,
        max_calls_reply,
    })
}
