//! `KSR.htable`: Kamailio's htable functions over the tenant's tables
//! ([`engine`]), and the reads and writes behind `$sht(...)` and friends
//! (called from pv.rs).
//!
//! Return codes are Kamailio's: 1 for success and for a match, -1 for
//! failure, no match, an unknown table, a bad operator or expression;
//! `sht_inc`/`sht_dec` return the new value or -255. Every failure the
//! script caused is logged with the function's name.

pub mod engine;

use std::sync::Arc;

use kemibox_store::unix_now;

use self::engine::{Listed, Matcher, Table, Target};
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
    table: Arc<Table>,
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
    fn ht_table(&mut self, function: &str, name: &str) -> Option<Arc<Table>> {
        let found = self.state.htable.table(name).cloned();
        if found.is_none() {
            self.script_error(function, format!("no htable {name:?}"));
        }
        found
    }

    fn ht_get(&mut self, function: &str, table: &str, key: &str, missing: Xval) -> Xval {
        match self.ht_table(function, table) {
            Some(t) => t
                .get_or_initval(key, unix_now())
                .map_or(missing, |v| v.to_xval()),
            None => missing,
        }
    }

    fn ht_set(
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
        match t.set(key, value, expires_in, unix_now()) {
            Ok(()) => 1,
            Err(e) => {
                self.script_error(function, format!("htable {table:?}, key {key:?}: {e}"));
                -1
            }
        }
    }

    fn ht_add(&mut self, function: &str, table: &str, key: &str, delta: i32) -> i32 {
        let Some(t) = self.ht_table(function, table) else {
            return INC_ERROR;
        };
        match t.add(key, delta, unix_now()) {
            Ok(n) => n,
            Err(e) => {
                self.script_error(function, format!("htable {table:?}, key {key:?}: {e}"));
                INC_ERROR
            }
        }
    }

    /// The table and a matcher built by `build`, or a logged error.
    fn ht_matcher(
        &mut self,
        function: &str,
        table: &str,
        build: impl FnOnce() -> Result<Matcher, String>,
    ) -> Option<(Arc<Table>, Matcher)> {
        let t = self.ht_table(function, table)?;
        match build() {
            Ok(m) => Some((t, m)),
            Err(e) => {
                self.script_error(function, e);
                None
            }
        }
    }

    fn ht_remove_matching(
        &mut self,
        function: &str,
        table: &str,
        target: Target,
        build: impl FnOnce() -> Result<Matcher, String>,
    ) -> i32 {
        match self.ht_matcher(function, table, build) {
            Some((t, m)) => {
                t.remove_matching(target, &m, unix_now());
                1
            }
            None => -1,
        }
    }

    fn ht_match(
        &mut self,
        function: &str,
        table: &str,
        target: Target,
        op: &str,
        value: &str,
    ) -> i32 {
        match self.ht_matcher(function, table, || Matcher::new(op, value)) {
            Some((t, m)) => crate::modules::kemi(t.any_match(target, &m, unix_now())),
            None => -1,
        }
    }

    /// The current item of iterator `name`, or a logged error.
    fn ht_current(&mut self, function: &str, name: &str) -> Option<(Arc<Table>, String)> {
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
    }
    async fn sht_gete(&mut self, htname: String, itname: String) -> Xval {
        self.ht_get(
            "KSR.htable.sht_gete",
            &htname,
            &itname,
            Xval::Str(String::new()),
        )
    }
    async fn sht_getw(&mut self, htname: String, itname: String) -> Xval {
        self.ht_get(
            "KSR.htable.sht_getw",
            &htname,
            &itname,
            Xval::Str("<null>".into()),
        )
    }
    async fn sht_sets(&mut self, htname: String, itname: String, itval: String) -> i32 {
        self.ht_set(
            "KSR.htable.sht_sets",
            &htname,
            &itname,
            PvValue::Str(itval),
            None,
        )
    }
    async fn sht_seti(&mut self, htname: String, itname: String, itval: i32) -> i32 {
        self.ht_set(
            "KSR.htable.sht_seti",
            &htname,
            &itname,
            PvValue::Int(itval),
            None,
        )
    }
    async fn sht_setex(&mut self, htname: String, itname: String, itval: i32) -> i32 {
        let Some(t) = self.ht_table("KSR.htable.sht_setex", &htname) else {
            return -1;
        };
        t.set_expire(&itname, secs(itval), unix_now());
        1
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
    }
    async fn sht_setxi(&mut self, htname: String, itname: String, itval: i32, exval: i32) -> i32 {
        self.ht_set(
            "KSR.htable.sht_setxi",
            &htname,
            &itname,
            PvValue::Int(itval),
            Some(secs(exval)),
        )
    }
    async fn sht_inc(&mut self, htname: String, itname: String) -> i32 {
        self.ht_add("KSR.htable.sht_inc", &htname, &itname, 1)
    }
    async fn sht_dec(&mut self, htname: String, itname: String) -> i32 {
        self.ht_add("KSR.htable.sht_dec", &htname, &itname, -1)
    }
    async fn sht_is_null(&mut self, htname: String, itname: String) -> i32 {
        match self.ht_table("KSR.htable.sht_is_null", &htname) {
            Some(t) => crate::modules::kemi(t.get(&itname, unix_now()).is_none()),
            None => -1,
        }
    }
    async fn sht_rm(&mut self, hname: String, iname: String) -> i32 {
        let Some(t) = self.ht_table("KSR.htable.sht_rm", &hname) else {
            return -1;
        };
        t.remove(&iname, unix_now());
        1
    }
    async fn sht_rm_name_re(&mut self, htname: String, rexp: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_name_re", &htname, Target::Name, || {
            Matcher::regex(&rexp)
        })
    }
    async fn sht_rm_value_re(&mut self, htname: String, rexp: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_value_re", &htname, Target::Value, || {
            Matcher::regex(&rexp)
        })
    }
    async fn sht_rm_name(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_name", &sname, Target::Name, || {
            Matcher::new(&sop, &sval)
        })
    }
    async fn sht_rm_value(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_remove_matching("KSR.htable.sht_rm_value", &sname, Target::Value, || {
            Matcher::new(&sop, &sval)
        })
    }
    async fn sht_match_name(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match(
            "KSR.htable.sht_match_name",
            &sname,
            Target::Name,
            &sop,
            &sval,
        )
    }
    async fn sht_match_str_value(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match(
            "KSR.htable.sht_match_str_value",
            &sname,
            Target::Value,
            &sop,
            &sval,
        )
    }
    async fn sht_has_name(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match("KSR.htable.sht_has_name", &sname, Target::Name, &sop, &sval)
    }
    async fn sht_has_str_value(&mut self, sname: String, sop: String, sval: String) -> i32 {
        self.ht_match(
            "KSR.htable.sht_has_str_value",
            &sname,
            Target::Value,
            &sop,
            &sval,
        )
    }
    async fn sht_reset(&mut self, hname: String) -> i32 {
        let Some(t) = self.ht_table("KSR.htable.sht_reset", &hname) else {
            return -1;
        };
        t.reset();
        1
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
        let pending = table.items(unix_now()).into_iter();
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
        let Some(it) = self.htable_iterators.find(&iname) else {
            self.script_error(
                "KSR.htable.sht_iterator_next",
                format!("no iterator {iname:?}"),
            );
            return -1;
        };
        // Items removed or expired since the start are skipped.
        let now = unix_now();
        loop {
            it.current = it.pending.next();
            match &it.current {
                None => return -1,
                Some(item) => {
                    if let Some(value) = it.table.get(&item.key, now) {
                        let key = item.key.clone();
                        it.current = Some(Listed {
                            expires: now + it.table.expires_in(&key, now),
                            key,
                            value,
                        });
                        return 1;
                    }
                }
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
        let Some((table, key)) = self.ht_current("KSR.htable.sht_iterator_rm", &iname) else {
            return -1;
        };
        table.remove(&key, unix_now());
        1
    }
    async fn sht_iterator_sets(&mut self, iname: String, sval: String) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_sets";
        let Some((table, key)) = self.ht_current(F, &iname) else {
            return -1;
        };
        let name = table.spec().name.clone();
        self.ht_set(F, &name, &key, PvValue::Str(sval), None)
    }
    async fn sht_iterator_seti(&mut self, iname: String, ival: i32) -> i32 {
        const F: &str = "KSR.htable.sht_iterator_seti";
        let Some((table, key)) = self.ht_current(F, &iname) else {
            return -1;
        };
        let name = table.spec().name.clone();
        self.ht_set(F, &name, &key, PvValue::Int(ival), None)
    }
    async fn sht_iterator_setex(&mut self, iname: String, exval: i32) -> i32 {
        let Some((table, key)) = self.ht_current("KSR.htable.sht_iterator_setex", &iname) else {
            return -1;
        };
        table.set_expire(&key, secs(exval), unix_now());
        1
    }
}
