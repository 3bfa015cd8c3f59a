//! `[dispatcher]` and `[tenant.dispatcher]`: the dispatcher module's
//! settings, Kamailio's parameter names (docs/modules/dispatcher.md).
//! Each key comes from the tenant's own table, else the top level's, else
//! Kamailio's default, and is checked where it was given.
//!
//! ```toml
//! [dispatcher]
//! list_file = "dispatcher.list"   # relative to this file, or:
//! # db = true                     # the dispatcher table of [database]
//! flags = 2                       # failover (ds_next_dst)
//! ds_ping_interval = 10           # seconds; 0: no probes
//! ds_probing_mode = 1
//! ds_probing_threshold = 3
//! ds_inactive_threshold = 1
//! ds_ping_reply_codes = "class=2;code=404"
//! ds_ping_from = "sip:proxy@example.com"
//! ds_hash_size = 9                # call load dispatching (algorithm 10)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use kemibox_kemi::dispatcher::{ProbingMode, ReplyCodes, Settings, Thresholds};
use serde::Deserialize;
use toml::Spanned;

use super::locate::Problem;
use super::validate::{Checked, Scope};

/// `[dispatcher]` and `[tenant.dispatcher]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherTable {
    pub list_file: Option<Spanned<PathBuf>>,
    /// The destinations from the tenant's rows of the dispatcher table in
    /// the proxy's database (Kamailio's `db_url` + `table_name`).
    pub db: Option<Spanned<bool>>,
    pub flags: Option<Spanned<i64>>,
    pub force_dst: Option<Spanned<i64>>,
    pub hash_pvar: Option<Spanned<String>>,
    pub setid_pvname: Option<Spanned<String>>,
    pub attrs_pvname: Option<Spanned<String>>,
    pub ds_ping_method: Option<Spanned<String>>,
    pub ds_ping_from: Option<Spanned<String>>,
    pub ds_ping_interval: Option<Spanned<i64>>,
    pub ds_probing_mode: Option<Spanned<i64>>,
    pub ds_probing_threshold: Option<Spanned<i64>>,
    pub ds_inactive_threshold: Option<Spanned<i64>>,
    pub ds_ping_reply_codes: Option<Spanned<String>>,
    pub ds_hash_size: Option<Spanned<i64>>,
    pub ds_hash_expire: Option<Spanned<i64>>,
    pub ds_hash_initexpire: Option<Spanned<i64>>,
    pub ds_hash_check_interval: Option<Spanned<i64>>,
    /// Kamailio parameters kemibox does not take: refused with the reason.
    pub db_url: Option<Spanned<toml::Value>>,
    pub table_name: Option<Spanned<toml::Value>>,
    pub use_default: Option<Spanned<toml::Value>>,
}

type Pick<'a, T> = Option<(Scope<'a>, &'a Spanned<T>)>;

/// A key's value from the tenant's table, else the top level's.
fn pick<'a, T>(
    top: Option<&'a DispatcherTable>,
    own: Option<(Scope<'a>, &'a DispatcherTable)>,
    get: fn(&DispatcherTable) -> &Option<Spanned<T>>,
) -> Pick<'a, T> {
    own.and_then(|(scope, t)| get(t).as_ref().map(|v| (scope, v)))
        .or_else(|| top.and_then(|t| get(t).as_ref().map(|v| (Scope::Top, v))))
}

fn problem<T>(scope: Scope<'_>, key: &str, v: &Spanned<T>, what: String, fix: &str) -> Problem {
    Problem::new(
        scope.at(&format!("dispatcher.{key}"), v),
        format!("{}dispatcher: {what}", scope.label()),
        fix,
    )
}

/// An integer key within `range`.
fn int(
    key: &str,
    given: Pick<'_, i64>,
    range: std::ops::RangeInclusive<i64>,
) -> Checked<Option<i64>> {
    let Some((scope, v)) = given else {
        return Ok(None);
    };
    if range.contains(v.get_ref()) {
        return Ok(Some(*v.get_ref()));
    }
    Err(problem(
        scope,
        key,
        v,
        format!("{key} = {} is out of range", v.get_ref()),
        &format!(
            "give a number from {} to {}, or remove it",
            range.start(),
            range.end()
        ),
    ))
}

fn secs(n: Option<i64>, default: Duration) -> Duration {
    n.map_or(default, |n| Duration::from_secs(n.unsigned_abs()))
}

/// The merged and checked settings of a tenant (`own`: its
/// `[tenant.dispatcher]` and scope; `None` for the default tenant).
/// `base`: the config file's folder, for `list_file`.
pub fn settings(
    top: Option<&DispatcherTable>,
    own: Option<(Scope<'_>, &DispatcherTable)>,
    base: &Path,
) -> Checked<Settings> {
    for (key, get) in [
        (
            "db_url",
            (|t| &t.db_url) as fn(&DispatcherTable) -> &Option<Spanned<toml::Value>>,
        ),
        ("table_name", |t| &t.table_name),
        ("use_default", |t| &t.use_default),
    ] {
        if let Some((scope, v)) = pick(top, own, get) {
            return Err(problem(
                scope,
                key,
                v,
                format!("{key} is not supported by kemibox"),
                "give the destinations in a list file (list_file = \"dispatcher.list\", Kamailio's format) or in the database of [database] (db = true; rows managed with `kemibox dispatcher add`), and remove it",
            ));
        }
    }
    // The source as a whole: the tenant's own (list_file or db) replaces
    // the top level's.
    let source = own
        .filter(|(_, t)| t.list_file.is_some() || t.db.is_some())
        .or_else(|| top.map(|t| (Scope::Top, t)));
    let (list_file, db) = match source {
        None => (None, false),
        Some((scope, t)) => {
            let db = t.db.as_ref().is_some_and(|v| *v.get_ref());
            if let (Some(_), Some(v), true) = (&t.list_file, &t.db, db) {
                return Err(problem(
                    scope,
                    "db",
                    v,
                    "list_file and db = true both name the destinations".into(),
                    "keep one: remove list_file to read the dispatcher table, or db to read the list file",
                ));
            }
            let file = t.list_file.as_ref();
            (file.map(|p| super::resolve(base, p.get_ref())), db)
        }
    };
    let d = Settings::default();
    let day = 86_400 * 365;
    let mut s = Settings {
        list_file,
        db,
        flags: int("flags", pick(top, own, |t| &t.flags), 0..=3)?.map_or(d.flags, |f| f as u32),
        force_dst: int("force_dst", pick(top, own, |t| &t.force_dst), 0..=1)?
            .map_or(d.force_dst, |f| f == 1),
        ping_interval: secs(
            int(
                "ds_ping_interval",
                pick(top, own, |t| &t.ds_ping_interval),
                0..=day,
            )?,
            d.ping_interval,
        ),
        thresholds: Thresholds {
            probing: int(
                "ds_probing_threshold",
                pick(top, own, |t| &t.ds_probing_threshold),
                1..=1_000_000,
            )?
            .map_or(d.thresholds.probing, |n| n as u32),
            inactive: int(
                "ds_inactive_threshold",
                pick(top, own, |t| &t.ds_inactive_threshold),
                1..=1_000_000,
            )?
            .map_or(d.thresholds.inactive, |n| n as u32),
        },
        hash_size: int("ds_hash_size", pick(top, own, |t| &t.ds_hash_size), 0..=24)?
            .map_or(d.hash_size, |n| n as u32),
        hash_expire: secs(
            int(
                "ds_hash_expire",
                pick(top, own, |t| &t.ds_hash_expire),
                1..=day,
            )?,
            d.hash_expire,
        ),
        hash_initexpire: secs(
            int(
                "ds_hash_initexpire",
                pick(top, own, |t| &t.ds_hash_initexpire),
                1..=day,
            )?,
            d.hash_initexpire,
        ),
        hash_check_interval: secs(
            int(
                "ds_hash_check_interval",
                pick(top, own, |t| &t.ds_hash_check_interval),
                1..=day,
            )?,
            d.hash_check_interval,
        ),
        ..d
    };
    if let Some(mode) = int(
        "ds_probing_mode",
        pick(top, own, |t| &t.ds_probing_mode),
        0..=3,
    )? {
        s.probing_mode = ProbingMode::from_int(mode).unwrap_or_default();
    }
    if let Some((scope, v)) = pick(top, own, |t| &t.ds_ping_reply_codes) {
        s.reply_codes = ReplyCodes::parse(v.get_ref()).map_err(|why| {
            problem(
                scope,
                "ds_ping_reply_codes",
                v,
                why,
                "write class=N;code=NNN parts separated by ';', e.g. \"class=2;code=404\"",
            )
        })?;
    }
    if let Some((scope, v)) = pick(top, own, |t| &t.ds_ping_method) {
        let m = v.get_ref();
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(problem(
                scope,
                "ds_ping_method",
                v,
                format!("ds_ping_method {m:?} is not a SIP method"),
                "give a method in capitals, e.g. \"OPTIONS\", or remove it",
            ));
        }
        s.ping_method = m.clone();
    }
    if let Some((scope, v)) = pick(top, own, |t| &t.ds_ping_from) {
        if kemibox_sip::Uri::parse(v.get_ref()).is_err() {
            return Err(problem(
                scope,
                "ds_ping_from",
                v,
                format!("ds_ping_from {:?} is not a URI", v.get_ref()),
                "give a SIP URI, e.g. \"sip:dispatcher@localhost\", or remove it",
            ));
        }
        s.ping_from = v.get_ref().clone();
    }
    for (key, get, out) in [
        (
            "setid_pvname",
            (|t| &t.setid_pvname) as fn(&DispatcherTable) -> &Option<Spanned<String>>,
            &mut s.setid_pvname,
        ),
        ("attrs_pvname", |t| &t.attrs_pvname, &mut s.attrs_pvname),
    ] {
        if let Some((scope, v)) = pick(top, own, get) {
            let name = v.get_ref();
            let ok = ["$var(", "$avp("]
                .iter()
                .any(|p| name.starts_with(p) && name.ends_with(')') && name.len() > p.len() + 1);
            if !ok {
                return Err(problem(
                    scope,
                    key,
                    v,
                    format!("{key} {name:?} is not a writable variable"),
                    "give $var(name) or $avp(name), or remove it",
                ));
            }
            *out = Some(name.clone());
        }
    }
    s.hash_pvar = pick(top, own, |t| &t.hash_pvar).map(|(_, v)| v.get_ref().clone());
    Ok(s)
}
