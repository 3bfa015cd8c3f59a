//! `[acc]` and `[tenant.acc]`: the acc module's settings (Kamailio's acc
//! parameters of the same names). Each key comes from the tenant's own
//! table, else the top level's, else Kamailio's default, and is checked
//! where it was given.
//!
//! ```toml
//! [acc]
//! log_flag = 1                 # 2xx (and failed, see below) to the log
//! db_flag = 1                  # ... and to the acc table
//! log_missed_flag = 2          # missed INVITEs to the log
//! db_missed_flag = 2           # ... and to missed_calls
//! failed_transaction_flag = 3  # account negative replies too
//! failed_filter = [408]        # ... but not these
//! log_extra = "ua=$hdr(User-Agent)"
//! db_extra = "src_ip=$si;dst_user=$rU"
//! db_table_acc = "acc"
//! db_table_missed_calls = "missed_calls"
//! ```

use kemibox_kemi::AccSettings;
use serde::Deserialize;
use toml::Spanned;

use super::locate::Problem;
use super::validate::{Checked, Scope};

/// `[acc]` and `[tenant.acc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccTable {
    pub log_flag: Option<Spanned<i64>>,
    pub log_missed_flag: Option<Spanned<i64>>,
    pub db_flag: Option<Spanned<i64>>,
    pub db_missed_flag: Option<Spanned<i64>>,
    pub failed_transaction_flag: Option<Spanned<i64>>,
    pub failed_filter: Option<Spanned<Vec<i64>>>,
    pub log_extra: Option<Spanned<String>>,
    pub db_extra: Option<Spanned<String>>,
    pub db_table_acc: Option<Spanned<String>>,
    pub db_table_missed_calls: Option<Spanned<String>>,
}

/// A key's value from the tenant's table, else the top level's, with the
/// scope it was given in.
fn pick<'a, T>(
    top: Option<&'a AccTable>,
    own: Option<(Scope<'a>, &'a AccTable)>,
    get: fn(&AccTable) -> &Option<Spanned<T>>,
) -> Option<(Scope<'a>, &'a Spanned<T>)> {
    own.and_then(|(scope, t)| get(t).as_ref().map(|v| (scope, v)))
        .or_else(|| top.and_then(|t| get(t).as_ref().map(|v| (Scope::Top, v))))
}

/// A flag: a message flag index, 0..31.
fn flag(key: &str, given: Option<(Scope<'_>, &Spanned<i64>)>) -> Checked<Option<u8>> {
    let Some((scope, v)) = given else {
        return Ok(None);
    };
    match u8::try_from(*v.get_ref()).ok().filter(|f| *f < 32) {
        Some(f) => Ok(Some(f)),
        None => Err(Problem::new(
            scope.at(&format!("acc.{key}"), v),
            format!(
                "{}acc: {key} = {} is not a message flag",
                scope.label(),
                v.get_ref()
            ),
            "give a flag number from 0 to 31 (the one the script sets with KSR.setflag), or remove it",
        )),
    }
}

/// The merged and checked settings of a tenant (`own`: its `[tenant.acc]`
/// and scope; `None` for the default tenant).
pub fn settings(
    top: Option<&AccTable>,
    own: Option<(Scope<'_>, &AccTable)>,
) -> Checked<AccSettings> {
    let mut s = AccSettings {
        log_flag: flag("log_flag", pick(top, own, |t| &t.log_flag))?,
        log_missed_flag: flag("log_missed_flag", pick(top, own, |t| &t.log_missed_flag))?,
        db_flag: flag("db_flag", pick(top, own, |t| &t.db_flag))?,
        db_missed_flag: flag("db_missed_flag", pick(top, own, |t| &t.db_missed_flag))?,
        failed_transaction_flag: flag(
            "failed_transaction_flag",
            pick(top, own, |t| &t.failed_transaction_flag),
        )?,
        ..AccSettings::default()
    };
    if let Some((scope, list)) = pick(top, own, |t| &t.failed_filter) {
        for code in list.get_ref() {
            match u16::try_from(*code).ok().filter(|c| (300..700).contains(c)) {
                Some(c) => s.failed_filter.push(c),
                None => {
                    return Err(Problem::new(
                        scope.at("acc.failed_filter", list),
                        format!(
                            "{}acc: failed_filter has {code}, not a negative SIP status",
                            scope.label()
                        ),
                        "list status codes from 300 to 699 (e.g. [408, 487]), or remove it",
                    ));
                }
            }
        }
    }
    for (key, get, out) in [
        (
            "log_extra",
            (|t| &t.log_extra) as fn(&AccTable) -> &Option<Spanned<String>>,
            &mut s.log_extra,
        ),
        ("db_extra", |t| &t.db_extra, &mut s.db_extra),
    ] {
        if let Some((scope, v)) = pick(top, own, get) {
            *out = kemibox_kemi::parse_extra(v.get_ref()).map_err(|why| {
                Problem::new(
                    scope.at(&format!("acc.{key}"), v),
                    format!("{}acc: {key}: {why}", scope.label()),
                    "write column=$pv pairs separated by ';', e.g. \"src_ip=$si;dst_user=$rU\"",
                )
            })?;
        }
    }
    for (key, get, out) in [
        (
            "db_table_acc",
            (|t| &t.db_table_acc) as fn(&AccTable) -> &Option<Spanned<String>>,
            &mut s.db_table_acc,
        ),
        (
            "db_table_missed_calls",
            |t| &t.db_table_missed_calls,
            &mut s.db_table_missed_calls,
        ),
    ] {
        if let Some((scope, v)) = pick(top, own, get) {
            if !kemibox_store::is_identifier(v.get_ref()) {
                return Err(Problem::new(
                    scope.at(&format!("acc.{key}"), v),
                    format!(
                        "{}acc: {key} = {:?} cannot be a table name",
                        scope.label(),
                        v.get_ref()
                    ),
                    "use letters, digits and _ (not starting with a digit, at most 63), or remove it",
                ));
            }
            *out = v.get_ref().clone();
        }
    }
    Ok(s)
}
