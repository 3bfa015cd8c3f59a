//! `KSR.htable`: Kamailio's htable functions over the tenant's tables
//! ([`engine`]: in memory, or in Redis through [`shared`]), and the reads
//! and writes behind `$sht(...)` and friends (called from pv.rs).
//!
//! Return codes are Kamailio's: 1 for success and for a match, -1 for
//! failure, no match, an unknown table, a bad operator or expression, or
//! a Redis that does not answer; `sht_inc`/`sht_dec` return the new value
//! or -255. Every failure the script caused is logged with the function's
//! name (a Redis outage once per table per ten seconds).

pub mod engine;
mod shared;

use kemibox_store::unix_now;

use self::engine::{HtError, Listed, Matcher, TableRef, Target};
use crate::bindings::kemibox::ksr::htable::Host;
use crate::bindings::kemibox::ksr::types::Xval;
use crate::{Ctx, PvValue};

/// `sht_inc`/`sht_dec`'s error result.
const INC_ERROR: i32 = -255;
/// Iterators one instance may have at once (Kamailio's limit).
const MAX_ITERATORS: usize = 4;

/// One `sht_iterator_*` iterator: the table's items when it started.
struct HtIterator {
    name: String,
    table: TableRef,
    pending: std::vec::IntoIter<Listed>,
    current: Option<Listed>,
}

/// An instance's iterators, by name.
#[derive(Default)]
pub(crate) struct Iterators(Vec<HtIterator>);

impl Iterators {
    fn find(&mut self, name: &str) -> Option<&mut HtIterator> {
        self.0.iter_mut().find(|i| i.name == name)
    }
}

/// A seconds count from a script: negative ones are 0.
fn secs(n: i32) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Ctx {
    /// Table `name`, or a logged error.
    fn ht_table(&mut self, function: &str, name: &str) -> Option<TableRef> {
        let found = self.state.htable.get(name);
        if found.is_none() {
            self.script_error(function, format!("no htable {name:?}"));
        }
        found
    }

    /// Log `e`, a failure on `table` (and `key`), unless it repeats a
    /// Redis outage already logged.
    fn ht_failed(&mut self, function: &str, table: &str, key: Option<&str>, e: &HtError) {
        if e.should_log() {
            match key {
                Some(key) => {
                    self.script_error(function, format!("htable {table:?}, key {key:?}: {e}"))
                }
                None => self.script_error(function, format!("htable {table:?}: {e}")),
            }
        }
    }

    /// The value of `result`, or `failed` after logging its error.
    fn ht_or<T>(
        &mut self,
        function: &str,
        table: &str,
        key: Option<&str>,
        result: Result<T, HtError>,
        failed: T,
    ) -> T {
        result.unwrap_or_else(|e| {
            self.ht_failed(function, table, key, &e);
            failed
        })
    }

    async fn ht_get(&mut self, function: &str, table: &str, key: &str, missing: Xval) -> Xval {
        let Some(t) = self.ht_table(function, table) else {
            return missing;
        };
        let found = t.get_or_initval(key, unix_now()).await;
        match self.ht_or(function, table, Some(key), found, None) {
            Some(v) => v.to_xval(),
            None => missing,
        }
    }

    async fn ht_set(
        &mut self,
        function: &str,
        table: &str,
        key: &str,
        value: PvValue,
        expires_in: Option<u64>,
    ) -> i32 {
        let Some(t) = self.ht_table(function, table) else {
            return -1;
        };
        let done = t.set(key, value, expires_in, unix_now()).await.map(|()| 1);
        self.ht_or(function, table, Some(key), done, -1)
    }

    async fn ht_add(&mut self, function: &str, table: &str, key: &str, delta: i32) -> i32 {
        let Some(t) = self.ht_table(function, table) else {
            return INC_ERROR;
        };
        let done = t.add(key, delta, unix_now()).await;
        self.ht_or(function, table, Some(key), done, INC_ERROR)
    }

    /// The table and a matcher built by `build`, or a logged error.
    fn ht_matcher(
        &mut self,
        function: &str,
        table: &str,
        build: impl FnOnce() -> Result<Matcher, String>,
    ) -> Option<(TableRef, Matcher)> {
        let t = self.ht_table(function, table)?;
        match build() {
            Ok(m) => Some((t, m)),
            Err(e) => {
                self.script_error(function, e);
                None
            }
        }
    }

    async fn ht_remove_matching(
        &mut self,
        function: &str,
        table: &str,
        target: Target,
        build: impl FnOnce() -> Result<Matcher, String>,
    ) -> i32 {
        let Some((t, m)) = self.ht_matcher(function, table, build) else {
            return -1;
        };
        let done = t.remove_matching(target, &m, unix_now()).await.map(|_| 1);
        self.ht_or(function, table, None, done, -1)
    }

    async fn ht_match(
        &mut self,
        function: &str,
        table: &str,
        target: Target,
        op: &str,
        value: &str,
    ) -> i32 {
        let Some((t, m)) = self.ht_matcher(function, table, || Matcher::new(op, value)) else {
            return -1;
        };
        let found = t.any_match(target, &m, unix_now()).await;
        crate::modules::kemi(self.ht_or(function, table, None, found, false))
    }

    /// The current item of iterator `name`, or a logged error.
    fn ht_current(&mut self, function: &str, name: &str) -> Option<(TableRef, String)> {
        let found = self
            .htable_iterators
            .find(name)
            .and_then(|i| Some((i.table.clone(), i.current.as_ref()?.key.clone())));
        if found.is_none() {
            self.script_error(function, format!("iterator {name:?} has no current item"));
        }
        found
    }

    /// `$shtitkey(name)` / `$shtitval(name)`: the iterator's current item.
    pub(crate) fn ht_iterator_item(&self, name: &str) -> Option<&Listed> {
        self.htable_iterators
            .0
            .iter()
            .find(|i| i.name == name)?
            .current
            .as_ref()
    }
}

impl Host for Ctx {
    async fn sht_get(&mut self, htname: String, itname: String) -> Xval {
        self.ht_get("KSR.htable.sht_get", &htname, &itname, Xval::Null)
            .await
    }
    async fn sht_gete(&mut self, htname: String, itname: String) -> Xval {
        self.ht_get(
            "KSR.htable.sht_gete",
            &htname,
            &itname,
            Xval::Str(String::new()),
        )
        .await
    }
    async fn sht_getw(&mut self, htname: String, itname: String) -> Xval {
        self.ht_get(
            "KSR.htable.sht_getw",
            &htname,
            &itname,
            Xval::Str("<null>".into()),
        )
        .await
    }
    async fn sht_sets(&mut self, htname: String, itname: String, itval: String) -> i32 {
        self.ht_set(
            "KSR.htable.sht_sets",
            &htname,
            &itname,
            PvValue::Str(itval),
            None,
        )
        .await
    }
    async fn sht_seti(&mut self, htname: String, itname: String, itval: i32) -> i32 {
        self.ht_set(
            "KSR.htable.sht_seti",
            &htname,
            &itname,
            PvValue::Int(itval),
            None,
        )
        .await
    }
    async fn sht_setex(&mut self, htname: String, itname: String, itval: i32) -> i32 {
        const F: &str = "KSR.htable.sht_setex";
        let Some(t) = self.ht_table(F, &htname) else {
            return -1;
        };
        let done = t.set_expire(&itname, secs(itval), unix_now()).await;
        self.ht_or(F, &htname, Some(&itname), done.map(|()| 1), -1)
    }
    async fn sht_setxs(
        &mut self,
        htname: String,
        itname: String,
        itval: String,
        exval: i32,
    ) -> i32 {
        self.ht_set(
            "KSR.htable.sht_setxs",
            &htname,
            &itname,
            PvValue::Str(itval),
            Some(secs(exval)),
        )
        .await
    }
    async fn sht_setxi(&mut self, htname: String, itname: String, itval: i32, exval: i32) -> i32 {
        self.ht_set(
            "KSR.htable.sht_setxi",
            &htname,
            &itname,
            PvValue::Int(itval),
            Some(secs(exval)),
        )
        .await
    }
    async fn sht_inc(&mut self, htname: String, itname: String) -> i32 {
        self.ht_add("KSR.htable.sht_inc", &htname, &itname, 1).await
    }
    async fn sht_dec(&mut self, htname: String, itname: String) -> i32 {
        self.ht_add("KSR.htable.sht_dec", &htname, &itname, -1)
            .await
    }
    async fn sht_is_null(&mut self, htname: String, itname: String) -> i32 {
        const F: &str = "KSR.htable.sht_is_null";
        let Some(t) = self.ht_table(F, &htname) else {
            return -1;
        };
        let found = t.get(&itname, unix_now()).await.map(|v| v.is_none());
        crate::modules::kemi(self.ht_or(F, &htname, Some(&itname), found, false))
    }
    async fn sht_rm(&mut self, hname: String, iname: String) -> i32 {
        const F: &str = "KSR.htable.sht_rm";
        let Some(t) = self.ht_table(F, &hname) else {
            return -1;
        };
        let done = t.remove(&iname, unix_now()).await.map(|_| 1);
        self.ht_or(F, &hname, Some(&iname), done, -1)
    }
    async fn sht_rm_name_re(&mut self, htname: String, rexp: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_name_re", &htname, Target::Name, || {
            Matcher::regex(&rexp)
        })
        .await
    }
    async fn sht_rm_value_re(&mut self, htname: String, rexp: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_value_re", &htname, Target::Value, || {
            Matcher::regex(&rexp)
        })
        .await
    }
    async fn sht_rm_name(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_name", &sname, Target::Name, || {
            Matcher::new(&sop, &sval)
        })
        .await
    }
    async fn sht_rm_value(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_value", &sname, Target::Value, || {
            Matcher::new(&sop, &sval)
        })
        .await
    }
    async fn sht_match_name(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match(
            "KSR.htable.sht_match_name",
            &sname,
            Target::Name,
            &sop,
            &sval,
        )
        .await
    }
    async fn sht_match_str_value(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match(
            "KSR.htable.sht_match_str_value",
            &sname,
            Target::Value,
            &sop,
            &sval,
        )
        .await
    }
    async fn sht_has_name(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match("KSR.htable.sht_has_name", &sname, Target::Name, &sop, &sval)
            .await
    }
    async fn sht_has_str_value(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match(
            "KSR.htable.sht_has_str_value",
            &sname,
            Target::Value,
            &sop,
            &sval,
        )
        .await
    }
    async fn sht_reset(&mut self, hname: String) -> i32 {
        const F: &str = "KSR.htable.sht_reset";
        let Some(t) = self.ht_table(F, &hname) else {
            return -1;
        };
        let done = t.reset(unix_now()).await.map(|_| 1);
        self.ht_or(F, &hname, None, done, -1)
    }
    async fn sht_iterator_start(&mut self, iname: String, hname: String) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_start";
        if iname.is_empty() {
            self.script_error(F, "empty iterator name");
            return -1;
        }
        let Some(table) = self.ht_table(F, &hname) else {
            return -1;
        };
        let items = table.items(unix_now()).await;
        let Some(items) = self.ht_or(F, &hname, None, items.map(Some), None) else {
            return -1;
        };
        let pending = items.into_iter();
        let started = HtIterator {
            name: iname.clone(),
            table,
            pending,
            current: None,
        };
        let iterators = &mut self.htable_iterators.0;
        if let Some(running) = iterators.iter_mut().find(|i| i.name == iname) {
            *running = started;
        } else if iterators.len() < MAX_ITERATORS {
            iterators.push(started);
        } else {
            self.script_error(
                F,
                format!("{MAX_ITERATORS} iterators are running; end one first"),
            );
            return -1;
        }
        1
    }
    async fn sht_iterator_next(&mut self, iname: String) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_next";
        let Some(it) = self.htable_iterators.find(&iname) else {
            self.script_error(F, format!("no iterator {iname:?}"));
            return -1;
        };
        let table = it.table.clone();
        // Items removed or expired since the start are skipped.
        let now = unix_now();
        loop {
            let Some(it) = self.htable_iterators.find(&iname) else {
                return -1;
            };
            it.current = it.pending.next();
            let Some(key) = it.current.as_ref().map(|i| i.key.clone()) else {
                return -1;
            };
            let found = match table.get(&key, now).await {
                Ok(Some(value)) => table
                    .expires_in(&key, now)
                    .await
                    .map(|left| Some((value, left))),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            let name = table.spec().name.clone();
            let Some(found) = self.ht_or(F, &name, Some(&key), found.map(Some), None) else {
                return -1;
            };
            if let Some((value, left)) = found {
                let expires = match left {
                    0 => 0,
                    left => now + left,
                };
                if let Some(it) = self.htable_iterators.find(&iname) {
                    it.current = Some(Listed {
                        key,
                        value,
                        expires,
                    });
                }
                return 1;
            }
        }
    }
    async fn sht_iterator_end(&mut self, iname: String) -> i32 {
        let before = self.htable_iterators.0.len();
        self.htable_iterators.0.retain(|i| i.name != iname);
        if self.htable_iterators.0.len() == before {
            self.script_error(
                "KSR.htable.sht_iterator_end",
                format!("no iterator {iname:?}"),
            );
            return -1;
        }
        1
    }
    async fn sht_iterator_rm(&mut self, iname: String) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_rm";
        let Some((table, key)) = self.ht_current(F, &iname) else {
            return -1;
        };
        let done = table.remove(&key, unix_now()).await.map(|_| 1);
        self.ht_or(F, &table.spec().name.clone(), Some(&key), done, -1)
    }
    async fn sht_iterator_sets(&mut self, iname: String, sval: String) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_sets";
        let Some((table, key)) = self.ht_current(F, &iname) else {
            return -1;
        };
        let name = table.spec().name.clone();
        self.ht_set(F, &name, &key, PvValue::Str(sval), None).await
    }
    async fn sht_iterator_seti(&mut self, iname: String, ival: i32) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_seti";
        let Some((table, key)) = self.ht_current(F, &iname) else {
            return -1;
        };
        let name = table.spec().name.clone();
        self.ht_set(F, &name, &key, PvValue::Int(ival), None).await
    }
    async fn sht_iterator_setex(&mut self, iname: String, exval: i32) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_setex";
        let Some((table, key)) = self.ht_current(F, &iname) else {
            return -1;
        };
        let done = table.set_expire(&key, secs(exval), unix_now()).await;
        self.ht_or(
            F,
            &table.spec().name.clone(),
            Some(&key),
            done.map(|()| 1),
            -1,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::engine::{Htables, MAX_KEY_BYTES, TableSpec};
    use super::*;
    use crate::bindings::kemibox::ksr::pv::Host as Pv;
    use crate::testing::{INVITE, ctx, logs, ready, s, value};
    use crate::{Ctx, TenantState};

    /// A context routing an INVITE from 192.0.2.7 whose tenant has the
    /// tables `ipban` (autoexpire 300), `counters` (initval 0) and `small`
    /// (2 items at most).
    fn with_tables() -> Ctx {
        let mut c = ctx(INVITE);
        let specs = vec![
            TableSpec {
                autoexpire: 300,
                ..TableSpec::new("ipban")
            },
            TableSpec {
                initval: Some(0),
                ..TableSpec::new("counters")
            },
            TableSpec {
                max_items: 2,
                ..TableSpec::new("small")
            },
        ];
        c.state = Arc::new(TenantState {
            htable: Htables::new(specs, "t1", None),
            ..TenantState::default()
        });
        c
    }

    fn i(n: i32) -> Option<PvValue> {
        Some(PvValue::Int(n))
    }

    #[test]
    fn get_and_set() {
        let mut c = with_tables();
        let ht = |s: &str| s.to_string();
        assert_eq!(value(ready(c.sht_get(ht("ipban"), ht("k")))), None);
        assert_eq!(value(ready(c.sht_gete(ht("ipban"), ht("k")))), s(""));
        assert_eq!(value(ready(c.sht_getw(ht("ipban"), ht("k")))), s("<null>"));
        assert_eq!(value(ready(c.sht_get(ht("counters"), ht("k")))), i(0));
        assert_eq!(ready(c.sht_is_null(ht("ipban"), ht("k"))), 1);
        assert_eq!(ready(c.sht_sets(ht("ipban"), ht("k"), ht("v"))), 1);
        assert_eq!(ready(c.sht_is_null(ht("ipban"), ht("k"))), -1);
        assert_eq!(value(ready(c.sht_get(ht("ipban"), ht("k")))), s("v"));
        assert_eq!(ready(c.sht_seti(ht("ipban"), ht("k"), 5)), 1);
        assert_eq!(value(ready(c.sht_gete(ht("ipban"), ht("k")))), i(5));
        assert_eq!(ready(c.sht_setxs(ht("ipban"), ht("x"), ht("s"), 30)), 1);
        assert_eq!(ready(c.sht_setxi(ht("ipban"), ht("y"), 2, 0)), 1);
        let table = c.state.htable.table("ipban").unwrap().clone();
        let now = unix_now();
        assert!((29..=30).contains(&table.expires_in("x", now)));
        assert!(
            (299..=300).contains(&table.expires_in("y", now)),
            "0: autoexpire"
        );
        assert_eq!(ready(c.sht_setex(ht("ipban"), ht("y"), 10)), 1);
        assert!((9..=10).contains(&table.expires_in("y", now)));
        assert_eq!(ready(c.sht_setex(ht("ipban"), ht("missing"), 10)), 1);
        assert_eq!(ready(c.sht_rm(ht("ipban"), ht("y"))), 1);
        assert_eq!(ready(c.sht_rm(ht("ipban"), ht("y"))), 1);
        assert_eq!(value(ready(c.sht_get(ht("ipban"), ht("y")))), None);
        assert!(logs(&c).is_empty(), "{:?}", logs(&c));
    }

    /// Unknown tables, full tables and oversized keys: the negative
    /// result and a log line naming the function.
    #[test]
    fn failures_are_negative_and_logged() {
        let mut c = with_tables();
        let ht = |s: &str| s.to_string();
        assert_eq!(value(ready(c.sht_get(ht("nope"), ht("k")))), None);
        assert_eq!(ready(c.sht_sets(ht("nope"), ht("k"), ht("v"))), -1);
        assert_eq!(ready(c.sht_inc(ht("nope"), ht("k"))), -255);
        assert_eq!(ready(c.sht_rm(ht("nope"), ht("k"))), -1);
        assert_eq!(ready(c.sht_reset(ht("nope"))), -1);
        assert_eq!(ready(c.sht_match_name(ht("nope"), ht("eq"), ht("k"))), -1);
        assert_eq!(ready(c.sht_seti(ht("small"), ht("a"), 1)), 1);
        assert_eq!(ready(c.sht_seti(ht("small"), ht("b"), 1)), 1);
        assert_eq!(ready(c.sht_seti(ht("small"), ht("c"), 1)), -1);
        assert_eq!(ready(c.sht_inc(ht("small"), ht("c"))), -255);
        assert_eq!(ready(c.sht_seti(ht("small"), ht("a"), 2)), 1, "updates fit");
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(ready(c.sht_seti(ht("ipban"), long, 1)), -1);
        assert_eq!(ready(c.sht_sets(ht("ipban"), ht("s"), ht("x"))), 1);
        assert_eq!(ready(c.sht_inc(ht("ipban"), ht("s"))), -255);
        assert_eq!(
            logs(&c),
            vec![
                "KSR.htable.sht_get: no htable \"nope\"",
                "KSR.htable.sht_sets: no htable \"nope\"",
                "KSR.htable.sht_inc: no htable \"nope\"",
                "KSR.htable.sht_rm: no htable \"nope\"",
                "KSR.htable.sht_reset: no htable \"nope\"",
                "KSR.htable.sht_match_name: no htable \"nope\"",
                "KSR.htable.sht_seti: htable \"small\", key \"c\": table is full (2 items)",
                "KSR.htable.sht_inc: htable \"small\", key \"c\": table is full (2 items)",
                &format!(
                    "KSR.htable.sht_seti: htable \"ipban\", key {:?}: key of 1025 bytes is over the limit (1024)",
                    "k".repeat(MAX_KEY_BYTES + 1)
                ),
                "KSR.htable.sht_inc: htable \"ipban\", key \"s\": item is not an integer",
            ]
        );
    }

    #[test]
    fn increments() {
        let mut c = with_tables();
        let ht = |s: &str| s.to_string();
        assert_eq!(ready(c.sht_inc(ht("counters"), ht("n"))), 1);
        assert_eq!(ready(c.sht_inc(ht("counters"), ht("n"))), 2);
        assert_eq!(ready(c.sht_dec(ht("counters"), ht("n"))), 1);
        assert_eq!(ready(c.sht_dec(ht("counters"), ht("m"))), -1);
    }

    /// The reference script's ban check, and the other match and remove
    /// functions with each operator.
    #[test]
    fn matching_and_removing() {
        let mut c = with_tables();
        let ht = |s: &str| s.to_string();
        assert_eq!(
            ready(c.sht_match_name(ht("ipban"), ht("eq"), ht("192.0.2.7"))),
            -1
        );
        assert_eq!(ready(c.sht_seti(ht("ipban"), ht("192.0.2.7"), 1)), 1);
        assert_eq!(
            ready(c.sht_sets(ht("ipban"), ht("10.1.1.1"), ht("sipvicious"))),
            1
        );
        assert_eq!(
            ready(c.sht_match_name(ht("ipban"), ht("eq"), ht("192.0.2.7"))),
            1
        );
        assert_eq!(
            ready(c.sht_has_name(ht("ipban"), ht("sw"), ht("192.0.2."))),
            1
        );
        assert_eq!(
            ready(c.sht_has_name(ht("ipban"), ht("ne"), ht("192.0.2.7"))),
            1
        );
        assert_eq!(ready(c.sht_has_name(ht("ipban"), ht("fm"), ht("10.*"))), 1);
        assert_eq!(
            ready(c.sht_has_name(ht("ipban"), ht("re"), ht("^172\\."))),
            -1
        );
        assert_eq!(
            ready(c.sht_match_str_value(ht("ipban"), ht("sw"), ht("sipv"))),
            1
        );
        assert_eq!(
            ready(c.sht_has_str_value(ht("ipban"), ht("eq"), ht("1"))),
            -1
        );
        assert_eq!(ready(c.sht_match_name(ht("ipban"), ht("xx"), ht("1"))), -1);
        assert_eq!(ready(c.sht_rm_name_re(ht("ipban"), ht("("))), -1);
        assert_eq!(
            ready(c.sht_rm_value(ht("ipban"), ht("re"), ht("vicious$"))),
            1
        );
        assert_eq!(value(ready(c.sht_get(ht("ipban"), ht("10.1.1.1")))), None);
        assert_eq!(ready(c.sht_seti(ht("ipban"), ht("10.1.1.2"), 1)), 1);
        assert_eq!(ready(c.sht_rm_name(ht("ipban"), ht("sw"), ht("10."))), 1);
        assert_eq!(value(ready(c.sht_get(ht("ipban"), ht("10.1.1.2")))), None);
        assert_eq!(ready(c.sht_sets(ht("ipban"), ht("a"), ht("x"))), 1);
        assert_eq!(ready(c.sht_rm_value_re(ht("ipban"), ht("^x$"))), 1);
        assert_eq!(ready(c.sht_rm_name_re(ht("ipban"), ht("^192"))), 1);
        assert_eq!(c.state.htable.table("ipban").unwrap().len(unix_now()), 0);
        assert_eq!(ready(c.sht_seti(ht("ipban"), ht("z"), 1)), 1);
        assert_eq!(ready(c.sht_reset(ht("ipban"))), 1);
        assert_eq!(c.state.htable.table("ipban").unwrap().len(unix_now()), 0);
        assert_eq!(
            logs(&c),
            vec![
                "KSR.htable.sht_match_name: unsupported match operator \"xx\"",
                "KSR.htable.sht_rm_name_re: bad regular expression \"(\": regex parse error:\n    (\n    ^\nerror: unclosed group",
            ]
        );
    }

    /// Iterators walk the items as they were at the start, set and remove
    /// the current one, and are limited to four.
    #[test]
    fn iterators() {
        let mut c = with_tables();
        let ht = |s: &str| s.to_string();
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            assert_eq!(ready(c.sht_seti(ht("counters"), ht(k), v)), 1);
        }
        assert_eq!(ready(c.sht_iterator_start(ht("i1"), ht("counters"))), 1);
        let mut seen = Vec::new();
        while ready(c.sht_iterator_next(ht("i1"))) == 1 {
            let key = value(ready(Pv::get(&mut c, ht("$shtitkey(i1)"))));
            let val = value(ready(Pv::get(&mut c, ht("$shtitval(i1)"))));
            seen.push((key, val));
            if seen.len() == 1 {
                assert_eq!(ready(c.sht_iterator_seti(ht("i1"), 10)), 1);
                assert_eq!(ready(c.sht_rm(ht("counters"), ht("b"))), 1);
            }
            if seen.len() == 2 {
                assert_eq!(ready(c.sht_iterator_rm(ht("i1"))), 1);
            }
        }
        assert_eq!(seen, vec![(s("a"), i(1)), (s("c"), i(3))], "b was removed");
        assert_eq!(
            ready(c.sht_iterator_sets(ht("i1"), ht("x"))),
            -1,
            "no current item"
        );
        assert_eq!(ready(c.sht_iterator_end(ht("i1"))), 1);
        assert_eq!(ready(c.sht_iterator_end(ht("i1"))), -1);
        assert_eq!(ready(c.sht_iterator_next(ht("i1"))), -1);
        let table = c.state.htable.table("counters").unwrap().clone();
        assert_eq!(table.get("a", unix_now()), i(10));
        assert_eq!(table.get("c", unix_now()), None);

        assert_eq!(ready(c.sht_iterator_start(ht("j"), ht("counters"))), 1);
        assert_eq!(ready(c.sht_iterator_next(ht("j"))), 1);
        assert_eq!(ready(c.sht_iterator_sets(ht("j"), ht("s"))), 1);
        assert_eq!(ready(c.sht_iterator_setex(ht("j"), 20)), 1);
        assert_eq!(table.get("a", unix_now()), s("s"));
        assert_eq!(
            table.expires_in("a", unix_now()),
            0,
            "counters has no autoexpire: its items never expire"
        );
        for name in ["k", "l", "m"] {
            assert_eq!(ready(c.sht_iterator_start(ht(name), ht("counters"))), 1);
        }
        assert_eq!(ready(c.sht_iterator_start(ht("n"), ht("counters"))), -1);
        assert_eq!(
            ready(c.sht_iterator_start(ht("j"), ht("counters"))),
            1,
            "a restart"
        );
        assert_eq!(ready(c.sht_iterator_start(ht("o"), ht("nope"))), -1);
        assert_eq!(
            logs(&c),
            vec![
                "KSR.htable.sht_iterator_sets: iterator \"i1\" has no current item",
                "KSR.htable.sht_iterator_end: no iterator \"i1\"",
                "KSR.htable.sht_iterator_next: no iterator \"i1\"",
                "KSR.htable.sht_iterator_start: 4 iterators are running; end one first",
                "KSR.htable.sht_iterator_start: no htable \"nope\"",
            ]
        );
    }

    /// `$sht(...)` and its kin through KSR.pv, keys with pseudo-variables.
    #[test]
    fn pseudo_variables() {
        let mut c = with_tables();
        let ht = |s: &str| s.to_string();
        ready(Pv::seti(&mut c, ht("$sht(ipban=>$si)"), 1));
        assert_eq!(
            ready(c.sht_match_name(ht("ipban"), ht("eq"), ht("192.0.2.7"))),
            1
        );
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$sht(ipban=>192.0.2.7)")))),
            i(1)
        );
        ready(Pv::sets(&mut c, ht("$sht(ipban=>$ci::$rm)"), ht("v")));
        assert_eq!(
            value(ready(
                c.sht_get(ht("ipban"), ht("call-1@192.0.2.7::INVITE"))
            )),
            s("v")
        );
        ready(Pv::sets(&mut c, ht("$var(k)"), ht("x")));
        ready(Pv::seti(&mut c, ht("$sht(ipban=>a$(var(k))b)"), 2));
        assert_eq!(value(ready(c.sht_get(ht("ipban"), ht("axb")))), i(2));
        let ex = value(ready(Pv::get(&mut c, ht("$shtex(ipban=>axb)"))));
        assert!(matches!(ex, Some(PvValue::Int(299..=300))), "{ex:?}");
        ready(Pv::seti(&mut c, ht("$shtex(ipban=>axb)"), 5));
        let ex = value(ready(Pv::get(&mut c, ht("$shtex(ipban=>axb)"))));
        assert!(matches!(ex, Some(PvValue::Int(4..=5))), "{ex:?}");
        assert_eq!(value(ready(Pv::get(&mut c, ht("$shtcn(ipban=>**)")))), i(3));
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$shtcn(ipban=>%~192.)")))),
            i(1)
        );
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$shtcv(ipban=>==v)")))),
            i(1)
        );
        let count = |c: &mut Ctx, name: &str| value(ready(Pv::get(c, name.to_string())));
        assert_eq!(count(&mut c, "$shtcn(ipban=>~%xb)"), i(1), "ends with");
        assert_eq!(count(&mut c, "$shtcn(ipban=>AX)"), i(1), "any case");
        assert_eq!(count(&mut c, "$shtcv(ipban=>eq1)"), i(1));
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$shtinc(counters=>n)")))),
            i(1)
        );
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$shtinc(counters=>n)")))),
            i(2)
        );
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$shtdec(counters=>n)")))),
            i(1)
        );
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$sht(counters=>none)")))),
            i(0),
            "initval"
        );
        ready(Pv::unset(&mut c, ht("$sht(ipban=>$si)")));
        assert_eq!(
            ready(c.sht_match_name(ht("ipban"), ht("eq"), ht("192.0.2.7"))),
            -1
        );
        assert!(logs(&c).is_empty(), "{:?}", logs(&c));

        // `KSR.pv.get` answers nil: the guest takes each reason to log it
        // with the script line; the writes log at once.
        assert_eq!(value(ready(Pv::get(&mut c, ht("$sht(nope=>k)")))), None);
        assert_eq!(
            c.take_script_error().as_deref(),
            Some("KSR.pv.get: no htable \"nope\": $sht(nope=>k)")
        );
        assert_eq!(value(ready(Pv::get(&mut c, ht("$sht(ipban)")))), None);
        assert_eq!(
            c.take_script_error().as_deref(),
            Some("KSR.pv.get: \"ipban\" is not table=>key: $sht(ipban)")
        );
        ready(Pv::seti(&mut c, ht("$shtcn(ipban=>**)"), 1));
        ready(Pv::sets(&mut c, ht("$shtex(ipban=>k)"), ht("soon")));
        assert_eq!(
            value(ready(Pv::get(&mut c, ht("$shtcn(ipban=>~~()")))),
            None
        );
        let bad_regex = c.take_script_error().unwrap_or_default();
        assert!(
            bad_regex.starts_with("KSR.pv.get: bad regular expression"),
            "{bad_regex:?}"
        );
        ready(Pv::seti(&mut c, ht("$sht(small=>a)"), 1));
        ready(Pv::seti(&mut c, ht("$sht(small=>b)"), 1));
        ready(Pv::seti(&mut c, ht("$sht(small=>c)"), 1));
        assert_eq!(
            logs(&c),
            [
                "KSR.pv.seti: pseudo-variable is read-only: $shtcn(ipban=>**)",
                "KSR.pv.sets: $shtex takes a number of seconds: $shtex(ipban=>k)",
                "KSR.pv.seti: key \"c\": table is full (2 items): $sht(small=>c)",
            ]
        );
    }
}
