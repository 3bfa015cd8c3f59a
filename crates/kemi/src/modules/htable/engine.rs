//! The tables of one tenant: items, expiry, the bound on their number,
//! matching, and what a table with a `dbtable` owes its database.
//!
//! Every operation takes the table's lock once and never across an
//! await, so an operation is atomic with respect to the tenant's other
//! instances. Expired items are invisible from the second they expire and
//! removed by [`Htables::purge_expired`] (the tenant's upkeep task). The
//! clock (`now`, Unix seconds) is a parameter, so expiry is tested without
//! waiting.
//!
//! A table lives in this process's memory ([`Table`]) or, declared with
//! `backend = "redis"`, in Redis ([`SharedTable`], shared by every node
//! pointed at the same server); [`TableRef`] is either, behind one set of
//! async methods that the host functions, pseudo-variables and RPCs use.

use kemibox_metrics::{ModuleKind, ModuleSeries};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kemibox_store::{
    HtableChanges, HtableRow, HtableStore, KEY_ARRAY, KEY_PLAIN, RedisHtables, VALUE_INT, VALUE_STR,
};
use regex::{Regex, RegexBuilder};

pub use super::shared::SharedTable;
use crate::PvValue;

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest string value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 8192;
/// Items per slot a table holds by default: `max_items` is
/// `2^size * ITEMS_PER_SLOT` unless configured.
pub const ITEMS_PER_SLOT: usize = 16;
/// The default `size` (Kamailio's: 2^4 = 16 slots).
pub const DEFAULT_SIZE: u32 = 4;
/// The largest effective `size`: larger values are lowered to it, as
/// Kamailio does.
pub const MAX_EFFECTIVE_SIZE: u32 = 14;
/// The compiled size a script's regular expression may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A table's declaration (Kamailio's `htable` parameter,
/// `name=>size=..;autoexpire=..;...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    /// The number of slots as a power of two, as configured.
    pub size: u32,
    /// The most items the table holds: a set beyond it fails.
    pub max_items: usize,
    /// Seconds after which an item not updated expires; 0: never.
    pub autoexpire: u64,
    /// What a missing item reads as (instead of `$null`), and where
    /// `sht_inc` starts a missing item.
    pub initval: Option<i32>,
    /// Whether updating an item restarts its autoexpire time.
    pub updateexpire: bool,
    /// The database table its items are loaded from at start.
    pub dbtable: Option<String>,
    /// Kamailio's `dbmode = 1`: changes are written back to `dbtable`
    /// (within a second, and at shutdown), so they survive a restart.
    pub dbmode: bool,
    /// Where the items live (`backend` in the configuration).
    pub backend: TableBackend,
}

/// Where a table's items live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TableBackend {
    /// This process's memory: the tenant's instances share it, other
    /// nodes do not.
    #[default]
    Memory,
    /// The Redis of `[database] redis`: every node pointed at it shares
    /// the table (a ban set through one holds on all).
    Redis,
}

impl TableSpec {
    /// A table with Kamailio's defaults.
    pub fn new(name: impl Into<String>) -> TableSpec {
        TableSpec {
            name: name.into(),
            size: DEFAULT_SIZE,
            max_items: TableSpec::default_max_items(DEFAULT_SIZE),
            autoexpire: 0,
            initval: None,
            updateexpire: true,
            dbtable: None,
            dbmode: false,
            backend: TableBackend::Memory,
        }
    }

    /// `max_items` when not configured: `2^size` slots (size lowered to
    /// [`MAX_EFFECTIVE_SIZE`]) times [`ITEMS_PER_SLOT`].
    pub fn default_max_items(size: u32) -> usize {
        (1usize << size.min(MAX_EFFECTIVE_SIZE)) * ITEMS_PER_SLOT
    }

    /// Whether changes go back to the database.
    fn writes_back(&self) -> bool {
        self.dbmode && self.dbtable.is_some()
    }
}

/// Why a set was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HtError {
    /// The table holds `max_items` live items already.
    Full(usize),
    KeyTooLong(usize),
    ValueTooLong(usize),
    /// `sht_inc`/`sht_dec` on a string item.
    NotInteger,
    /// The table is in Redis and Redis did not answer. `log` is false for
    /// the failures after the first of a burst, so an outage does not
    /// flood the log (see [`SharedTable`]).
    Unavailable {
        detail: String,
        log: bool,
    },
}

impl HtError {
    /// Whether the failure deserves its log line (all but the repeats of
    /// a Redis outage).
    pub fn should_log(&self) -> bool {
        !matches!(self, HtError::Unavailable { log: false, .. })
    }
}

impl std::fmt::Display for HtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HtError::Full(max) => write!(f, "table is full ({max} items)"),
            HtError::KeyTooLong(n) => {
                write!(f, "key of {n} bytes is over the limit ({MAX_KEY_BYTES})")
            }
            HtError::ValueTooLong(n) => {
                write!(
                    f,
                    "value of {n} bytes is over the limit ({MAX_VALUE_BYTES})"
                )
            }
            HtError::NotInteger => f.write_str("item is not an integer"),
            HtError::Unavailable { detail, .. } => f.write_str(detail),
        }
    }
}

/// What a match looks at: the item's name or its string value (integer
/// values never match a value expression, as in Kamailio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Name,
    Value,
}

/// A match expression: an operator and its operand.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `eq`
    Eq(String),
    /// `ne`
    Ne(String),
    /// `re`
    Re(Regex),
    /// `sw`: starts with.
    Sw(String),
    /// Ends with (`$shtcn(t=>~%x)`).
    Ew(String),
    /// An integer value equal to this (`$shtcv(t=>eq5)`); never a name.
    IntEq(i32),
    /// `fm`: shell wildcard, `*` and `?`.
    Fm(String),
    /// Everything (`$shtcn(t=>**)`).
    All,
}

impl Matcher {
    /// Operator `op` (`eq`, `ne`, `re`, `sw`, `fm`) with `value`; the error
    /// says what is wrong.
    pub fn new(op: &str, value: &str) -> Result<Matcher, String> {
        Ok(match op {
            "eq" => Matcher::Eq(value.into()),
            "ne" => Matcher::Ne(value.into()),
            "re" => Matcher::regex(value)?,
            "sw" => Matcher::Sw(value.into()),
            "fm" => Matcher::Fm(value.into()),
            _ => return Err(format!("unsupported match operator {op:?}")),
        })
    }

    /// A regular expression, bounded in size; case-insensitive and `^`/`$`
    /// matching at line ends, as Kamailio compiles htable's (POSIX
    /// extended, REG_ICASE, REG_NEWLINE).
    pub fn regex(expr: &str) -> Result<Matcher, String> {
        RegexBuilder::new(expr)
            .case_insensitive(true)
            .multi_line(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Matcher::Re)
            .map_err(|e| format!("bad regular expression {expr:?}: {e}"))
    }

    /// The expression of `$shtcn`/`$shtcv`, as Kamailio reads it: `**`
    /// everything, `==x` equal, `~~re` regular expression, `~%x` ends
    /// with, `%~x` starts with, `eqN` an integer value equal to N (values
    /// only); anything else is a regular expression.
    pub fn count_expr(expr: &str) -> Result<Matcher, String> {
        if expr == "**" {
            return Ok(Matcher::All);
        }
        let rest = expr.get(2..).unwrap_or_default();
        match expr.get(..2) {
            Some("==") => Ok(Matcher::Eq(rest.into())),
            Some("~~") => Matcher::regex(rest),
            Some("~%") => Ok(Matcher::Ew(rest.into())),
            Some("%~") => Ok(Matcher::Sw(rest.into())),
            Some("eq") => rest
                .trim()
                .parse()
                .map(Matcher::IntEq)
                .map_err(|_| format!("{expr:?}: eq takes an integer")),
            _ => Matcher::regex(expr),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            Matcher::Eq(v) => text == v,
            Matcher::Ne(v) => text != v,
            Matcher::Re(re) => re.is_match(text),
            Matcher::Sw(v) => text.starts_with(v.as_str()),
            Matcher::Ew(v) => text.ends_with(v.as_str()),
            Matcher::Fm(pattern) => wildcard(pattern.as_bytes(), text.as_bytes()),
            Matcher::IntEq(_) => false,
            Matcher::All => true,
        }
    }

    fn matches_item(&self, target: Target, key: &str, item: &Item) -> bool {
        self.matches_value(target, key, &item.value)
    }

    /// Whether the item `key` = `value` matches on `target`.
    pub fn matches_value(&self, target: Target, key: &str, value: &PvValue) -> bool {
        match target {
            Target::Name => self.matches(key),
            Target::Value => match (value, self) {
                (PvValue::Int(i), Matcher::IntEq(n)) => i == n,
                (PvValue::Int(_), Matcher::All) => true,
                (PvValue::Str(s), _) => self.matches(s),
                (PvValue::Int(_), _) => false,
            },
        }
    }
}

/// Shell wildcard match (`*` any run, `?` one byte), iterative with one
/// backtrack point, so no pattern costs more than `pattern × text`.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One item.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    value: PvValue,
    /// Unix seconds; 0: never.
    expires: u64,
}

impl Item {
    fn alive(&self, now: u64) -> bool {
        self.expires == 0 || self.expires > now
    }
}

/// An item as listed (dump, iterators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub value: PvValue,
    /// Unix seconds; 0: never.
    pub expires: u64,
}

/// Where a table's items live.
enum Backend {
    /// In this process's memory.
    Memory(Mutex<Memory>),
}

#[derive(Default)]
struct Memory {
    items: HashMap<String, Item>,
    /// Keys changed since the last write-back (tables with `dbmode`).
    dirty: HashSet<String>,
    /// Everything was removed since the last write-back.
    cleared: bool,
}

/// What a table counts for the metrics (`kemibox_htable_*`): items gone
/// and sets refused. Relaxed atomics: a count, not a synchronisation.
#[derive(Debug, Default)]
pub struct TableCounters {
    expired: AtomicU64,
    removed: AtomicU64,
    refused_full: AtomicU64,
}

impl TableCounters {
    pub(crate) fn expired(&self, n: usize) {
        self.expired.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn removed(&self, n: usize) {
        self.removed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count a set refused when `result` is [`HtError::Full`]; `result`
    /// passes through.
    pub(crate) fn full<T>(&self, result: Result<T, HtError>) -> Result<T, HtError> {
        if let Err(HtError::Full(_)) = result {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// `table`'s series (`items`: its live items when they are known,
    /// memory tables only).
    fn metric_series(&self, table: &str, items: Option<u64>, out: &mut Vec<ModuleSeries>) {
        let labels = || vec![("table", table.to_string())];
        if let Some(n) = items {
            out.push(ModuleSeries {
                name: "kemibox_htable_items",
                kind: ModuleKind::Gauge,
                help: "Live items in each of the tenant's htables kept in memory.",
                labels: labels(),
                value: n,
            });
        }
        for (reason, counter) in [("expired", &self.expired), ("removed", &self.removed)] {
            let mut l = labels();
            l.push(("reason", reason.to_string()));
            out.push(ModuleSeries {
                name: "kemibox_htable_items_removed_total",
                kind: ModuleKind::Counter,
                help: "Htable items gone, by reason: expired (autoexpire) or removed (script or RPC).",
                labels: l,
                value: counter.load(Ordering::Relaxed),
            });
        }
        out.push(ModuleSeries {
            name: "kemibox_htable_sets_refused_total",
            kind: ModuleKind::Counter,
            help: "New htable items refused because the table was full (its size).",
            labels: labels(),
            value: self.refused_full.load(Ordering::Relaxed),
        });
    }
}

/// One table.
pub struct Table {
    spec: TableSpec,
    backend: Backend,
    counters: TableCounters,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("spec", &self.spec).finish()
    }
}

fn text_len(value: &PvValue) -> usize {
    match value {
        PvValue::Str(s) => s.len(),
        PvValue::Int(_) => 0,
    }
}

impl Table {
    pub fn new(spec: TableSpec) -> Table {
        Table {
            spec,
            backend: Backend::Memory(Mutex::new(Memory::default())),
            counters: TableCounters::default(),
        }
    }

    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// Its metrics' counters.
    pub fn counters(&self) -> &TableCounters {
        &self.counters
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        match &self.backend {
            Backend::Memory(m) => m.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Note `key` for the write-back; a table with more pending keys than
    /// twice its capacity is rewritten whole instead, so the pending set
    /// stays bounded.
    fn changed(&self, m: &mut Memory, key: &str) {
        if !self.spec.writes_back() {
            return;
        }
        if m.dirty.len() >= 2 * self.spec.max_items {
            m.cleared = true;
            m.dirty = m.items.keys().cloned().collect();
        }
        m.dirty.insert(key.to_string());
    }

    /// The item's value, if set and not expired.
    pub fn get(&self, key: &str, now: u64) -> Option<PvValue> {
        let m = self.memory();
        m.items
            .get(key)
            .filter(|i| i.alive(now))
            .map(|i| i.value.clone())
    }

    /// [`Table::get`], else the table's `initval`.
    pub fn get_or_initval(&self, key: &str, now: u64) -> Option<PvValue> {
        self.get(key, now)
            .or_else(|| self.spec.initval.map(PvValue::Int))
    }

    /// Set `key` to `value`. `expires_in`: seconds from now (`Some(0)` or
    /// `None`: the table's rule: autoexpire for a new item, and for an
    /// updated one too when updateexpire is set). In a table without
    /// autoexpire items never expire, whatever `expires_in` (Kamailio's
    /// rule).
    pub fn set(
        &self,
        key: &str,
        value: PvValue,
        expires_in: Option<u64>,
        now: u64,
    ) -> Result<(), HtError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(HtError::KeyTooLong(key.len()));
        }
        if text_len(&value) > MAX_VALUE_BYTES {
            return Err(HtError::ValueTooLong(text_len(&value)));
        }
        let mut m = self.memory();
        self.put(&mut m, key, value, expires_in.filter(|&e| e > 0), now)?;
        self.changed(&mut m, key);
        Ok(())
    }

    fn default_expiry(&self, now: u64) -> u64 {
        match self.spec.autoexpire {
            0 => 0,
            secs => now.saturating_add(secs),
        }
    }

    fn put(
        &self,
        m: &mut Memory,
        key: &str,
        value: PvValue,
        expires_in: Option<u64>,
        now: u64,
    ) -> Result<(), HtError> {
        let explicit = expires_in
            .filter(|_| self.spec.autoexpire > 0)
            .map(|e| now.saturating_add(e));
        if let Some(item) = m.items.get_mut(key).filter(|i| i.alive(now)) {
            item.value = value;
            if let Some(at) = explicit {
                item.expires = at;
            } else if self.spec.updateexpire {
                item.expires = self.default_expiry(now);
            }
            return Ok(());
        }
        if !m.items.contains_key(key) && m.items.len() >= self.spec.max_items {
            let before = m.items.len();
            m.items.retain(|_, i| i.alive(now));
            self.counters.expired(before - m.items.len());
            if m.items.len() >= self.spec.max_items {
                return self.counters.full(Err(HtError::Full(self.spec.max_items)));
            }
        }
        let expires = explicit.unwrap_or_else(|| self.default_expiry(now));
        if m.items
            .insert(key.to_string(), Item { value, expires })
            .is_some()
        {
            // The key's expired item, replaced.
            self.counters.expired(1);
        }
        Ok(())
    }

    /// Set the item's expiry to `secs` from now (0: never); nothing when
    /// it is not set, or when the table has no autoexpire (as in
    /// Kamailio, items of such tables never expire).
    pub fn set_expire(&self, key: &str, secs: u64, now: u64) {
        if self.spec.autoexpire == 0 {
            return;
        }
        let mut m = self.memory();
        if let Some(item) = m.items.get_mut(key).filter(|i| i.alive(now)) {
            item.expires = if secs == 0 {
                0
            } else {
                now.saturating_add(secs)
            };
            self.changed(&mut m, key);
        }
    }

    /// Seconds until the item expires; 0 when it never does or is not set.
    pub fn expires_in(&self, key: &str, now: u64) -> u64 {
        let m = self.memory();
        m.items
            .get(key)
            .filter(|i| i.alive(now) && i.expires > 0)
            .map_or(0, |i| i.expires - now)
    }

    /// Remove the item; whether it was set.
    pub fn remove(&self, key: &str, now: u64) -> bool {
        let mut m = self.memory();
        let was = m.items.remove(key).map(|i| i.alive(now));
        match was {
            Some(true) => self.counters.removed(1),
            Some(false) => self.counters.expired(1),
            None => {}
        }
        self.changed(&mut m, key);
        was == Some(true)
    }

    /// Add `delta` to the integer item (a missing one starts at initval,
    /// else 0) and return the new value; wraps as Kamailio's int does.
    pub fn add(&self, key: &str, delta: i32, now: u64) -> Result<i32, HtError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(HtError::KeyTooLong(key.len()));
        }
        let mut m = self.memory();
        let current = match m.items.get(key).filter(|i| i.alive(now)) {
            Some(Item {
                value: PvValue::Int(i),
                ..
            }) => *i,
            Some(_) => return Err(HtError::NotInteger),
            None => self.spec.initval.unwrap_or(0),
        };
        let new = current.wrapping_add(delta);
        self.put(&mut m, key, PvValue::Int(new), None, now)?;
        self.changed(&mut m, key);
        Ok(new)
    }

    /// Remove every live item `matcher` matches; how many.
    pub fn remove_matching(&self, target: Target, matcher: &Matcher, now: u64) -> usize {
        let mut m = self.memory();
        let gone: Vec<String> = m
            .items
            .iter()
            .filter(|(k, i)| i.alive(now) && matcher.matches_item(target, k, i))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            m.items.remove(key);
            self.changed(&mut m, key);
        }
        self.counters.removed(gone.len());
        gone.len()
    }

    /// Whether some live item matches.
    pub fn any_match(&self, target: Target, matcher: &Matcher, now: u64) -> bool {
        let m = self.memory();
        m.items
            .iter()
            .any(|(k, i)| i.alive(now) && matcher.matches_item(target, k, i))
    }

    /// How many live items match.
    pub fn count_matching(&self, target: Target, matcher: &Matcher, now: u64) -> usize {
        let m = self.memory();
        m.items
            .iter()
            .filter(|(k, i)| i.alive(now) && matcher.matches_item(target, k, i))
            .count()
    }

    /// Remove every item.
    pub fn reset(&self, now: u64) {
        let mut m = self.memory();
        let live = m.items.values().filter(|i| i.alive(now)).count();
        self.counters.removed(live);
        self.counters.expired(m.items.len() - live);
        m.items.clear();
        if self.spec.writes_back() {
            m.dirty.clear();
            m.cleared = true;
        }
    }

    /// The live items, by key.
    pub fn items(&self, now: u64) -> Vec<Listed> {
        let m = self.memory();
        let mut out: Vec<Listed> = m
            .items
            .iter()
            .filter(|(_, i)| i.alive(now))
            .map(|(k, i)| Listed {
                key: k.clone(),
                value: i.value.clone(),
                expires: i.expires,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// How many live items.
    pub fn len(&self, now: u64) -> usize {
        self.memory()
            .items
            .values()
            .filter(|i| i.alive(now))
            .count()
    }

    /// Remove expired items; how many.
    pub fn purge_expired(&self, now: u64) -> usize {
        let mut m = self.memory();
        let gone: Vec<String> = m
            .items
            .iter()
            .filter(|(_, i)| !i.alive(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            m.items.remove(key);
            self.changed(&mut m, key);
        }
        self.counters.expired(gone.len());
        gone.len()
    }

    /// Replace the content with stored `rows` (start, reload): expired
    /// rows are skipped, array keys (`key_type` 1) become `key[0]`,
    /// `key[1]`, ... and `key::size`, and rows beyond `max_items` or the
    /// size limits are left out. Returns how many items were loaded and
    /// how many rows were left out.
    pub fn load(&self, rows: Vec<HtableRow>, now: u64) -> (usize, usize) {
        let mut m = self.memory();
        m.items.clear();
        m.dirty.clear();
        m.cleared = false;
        let mut skipped = 0;
        let mut arrays: HashMap<String, i32> = HashMap::new();
        for row in rows {
            if row.expires != 0 && row.expires <= now {
                continue;
            }
            let value = if row.value_type == VALUE_INT {
                match row.key_value.trim().parse() {
                    Ok(i) => PvValue::Int(i),
                    Err(_) => {
                        skipped += 1;
                        continue;
                    }
                }
            } else {
                PvValue::Str(row.key_value)
            };
            let key = if row.key_type == KEY_ARRAY {
                let n = arrays.entry(row.key_name.clone()).or_insert(0);
                *n += 1;
                format!("{}[{}]", row.key_name, *n - 1)
            } else {
                row.key_name
            };
            if key.len() > MAX_KEY_BYTES || text_len(&value) > MAX_VALUE_BYTES {
                skipped += 1;
                continue;
            }
            let expires = if row.expires != 0 && self.spec.autoexpire > 0 {
                row.expires
            } else {
                self.default_expiry(now)
            };
            if m.items.len() >= self.spec.max_items {
                skipped += 1;
                continue;
            }
            m.items.insert(key, Item { value, expires });
        }
        for (name, count) in arrays {
            if m.items.len() >= self.spec.max_items {
                skipped += 1;
            } else {
                m.items.insert(
                    format!("{name}::size"),
                    Item {
                        value: PvValue::Int(count),
                        expires: 0,
                    },
                );
            }
        }
        (m.items.len(), skipped)
    }

    /// What changed since the last call, as rows to write; the pending
    /// set is emptied (give it back with [`Table::unwrite`] when the
    /// write fails).
    pub fn take_changes(&self, now: u64) -> HtableChanges {
        let mut m = self.memory();
        let mut changes = HtableChanges {
            clear: std::mem::take(&mut m.cleared),
            ..HtableChanges::default()
        };
        let dirty = std::mem::take(&mut m.dirty);
        for key in dirty {
            match m.items.get(&key).filter(|i| i.alive(now)) {
                Some(item) => changes.upserts.push(row(&key, item)),
                None => changes.deletes.push(key),
            }
        }
        changes
    }

    /// Mark what a failed write carried as pending again.
    pub fn unwrite(&self, changes: &HtableChanges) {
        let mut m = self.memory();
        m.cleared |= changes.clear;
        let keys = changes
            .upserts
            .iter()
            .map(|r| &r.key_name)
            .chain(&changes.deletes);
        for key in keys {
            self.changed(&mut m, key);
        }
    }
}

/// A table wherever it lives: what the host functions, pseudo-variables
/// and RPCs work on. On a table in memory every method is ready at once
/// (nothing to await); on one in Redis each is one or a few bounded round
/// trips, and a Redis failure is [`HtError::Unavailable`].
#[derive(Debug, Clone)]
pub enum TableRef {
    Memory(Arc<Table>),
    Shared(Arc<SharedTable>),
}

impl TableRef {
    pub fn spec(&self) -> &TableSpec {
        match self {
            TableRef::Memory(t) => t.spec(),
            TableRef::Shared(t) => t.spec(),
        }
    }

    /// The item's value, if set and not expired.
    pub async fn get(&self, key: &str, now: u64) -> Result<Option<PvValue>, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.get(key, now)),
            TableRef::Shared(t) => t.get(key).await,
        }
    }

    /// [`TableRef::get`], else the table's `initval`.
    pub async fn get_or_initval(&self, key: &str, now: u64) -> Result<Option<PvValue>, HtError> {
        let found = self.get(key, now).await?;
        Ok(found.or_else(|| self.spec().initval.map(PvValue::Int)))
    }

    /// See [`Table::set`].
    pub async fn set(
        &self,
        key: &str,
        value: PvValue,
        expires_in: Option<u64>,
        now: u64,
    ) -> Result<(), HtError> {
        match self {
            TableRef::Memory(t) => t.set(key, value, expires_in, now),
            TableRef::Shared(t) => t.set(key, value, expires_in).await,
        }
    }

    /// See [`Table::set_expire`].
    pub async fn set_expire(&self, key: &str, secs: u64, now: u64) -> Result<(), HtError> {
        match self {
            TableRef::Memory(t) => {
                t.set_expire(key, secs, now);
                Ok(())
            }
            TableRef::Shared(t) => t.set_expire(key, secs).await,
        }
    }

    /// Seconds until the item expires; 0 when it never does or is not set.
    pub async fn expires_in(&self, key: &str, now: u64) -> Result<u64, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.expires_in(key, now)),
            TableRef::Shared(t) => t.expires_in(key).await,
        }
    }

    /// Remove the item; whether it was set.
    pub async fn remove(&self, key: &str, now: u64) -> Result<bool, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.remove(key, now)),
            TableRef::Shared(t) => t.remove(key).await,
        }
    }

    /// See [`Table::add`].
    pub async fn add(&self, key: &str, delta: i32, now: u64) -> Result<i32, HtError> {
        match self {
            TableRef::Memory(t) => t.add(key, delta, now),
            TableRef::Shared(t) => t.add(key, delta).await,
        }
    }

    /// Remove every live item `matcher` matches; how many.
    pub async fn remove_matching(
        &self,
        target: Target,
        matcher: &Matcher,
        now: u64,
    ) -> Result<usize, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.remove_matching(target, matcher, now)),
            TableRef::Shared(t) => t.remove_matching(target, matcher).await,
        }
    }

    /// Whether some live item matches.
    pub async fn any_match(
        &self,
        target: Target,
        matcher: &Matcher,
        now: u64,
    ) -> Result<bool, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.any_match(target, matcher, now)),
            TableRef::Shared(t) => Ok(t.count_matching(target, matcher).await? > 0),
        }
    }

    /// How many live items match.
    pub async fn count_matching(
        &self,
        target: Target,
        matcher: &Matcher,
        now: u64,
    ) -> Result<usize, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.count_matching(target, matcher, now)),
            TableRef::Shared(t) => t.count_matching(target, matcher).await,
        }
    }

    /// Remove every item; how many there were.
    pub async fn reset(&self, now: u64) -> Result<usize, HtError> {
        match self {
            TableRef::Memory(t) => {
                let removed = t.len(now);
                t.reset(now);
                Ok(removed)
            }
            TableRef::Shared(t) => t.reset().await,
        }
    }

    /// The live items, by key.
    pub async fn items(&self, now: u64) -> Result<Vec<Listed>, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.items(now)),
            TableRef::Shared(t) => t.items().await,
        }
    }

    /// How many live items.
    pub async fn len(&self, now: u64) -> Result<usize, HtError> {
        match self {
            TableRef::Memory(t) => Ok(t.len(now)),
            TableRef::Shared(t) => t.item_count().await,
        }
    }
}

fn row(key: &str, item: &Item) -> HtableRow {
    let (value_type, key_value) = match &item.value {
        PvValue::Int(i) => (VALUE_INT, i.to_string()),
        PvValue::Str(s) => (VALUE_STR, s.clone()),
    };
    HtableRow {
        key_name: key.to_string(),
        key_type: KEY_PLAIN,
        value_type,
        key_value,
        expires: item.expires,
    }
}

/// A tenant's tables, and the database the ones with a `dbtable` use.
#[derive(Default)]
pub struct Htables {
    /// The tables kept in memory.
    tables: HashMap<String, Arc<Table>>,
    /// The tables kept in Redis (`backend = "redis"`).
    shared: HashMap<String, Arc<SharedTable>>,
    persistence: Option<Persistence>,
}

struct Persistence {
    store: Arc<dyn HtableStore>,
    tenant: String,
}

impl std::fmt::Debug for Htables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htables")
            .field("tables", &self.names())
            .finish()
    }
}

impl Htables {
    /// `tenant`'s tables as declared, empty, every one in memory (also
    /// one declared with `backend = "redis"`: [`Htables::with_redis`] is
    /// what puts those in Redis); those with a `dbtable` load from and
    /// write to `store` ([`Htables::load`]).
    pub fn new(
        specs: Vec<TableSpec>,
        tenant: &str,
        store: Option<Arc<dyn HtableStore>>,
    ) -> Htables {
        Htables {
            tables: specs
                .into_iter()
                .map(|s| (s.name.clone(), Arc::new(Table::new(s))))
                .collect(),
            shared: HashMap::new(),
            persistence: store.map(|store| Persistence {
                store,
                tenant: tenant.to_string(),
            }),
        }
    }

    /// As [`Htables::new`], the tables declared with `backend = "redis"`
    /// kept in `redis`, under `tenant`'s keys.
    pub fn with_redis(
        specs: Vec<TableSpec>,
        tenant: &str,
        store: Option<Arc<dyn HtableStore>>,
        redis: Arc<RedisHtables>,
    ) -> Htables {
        let (shared, memory): (Vec<TableSpec>, Vec<TableSpec>) = specs
            .into_iter()
            .partition(|s| s.backend == TableBackend::Redis);
        let mut tables = Htables::new(memory, tenant, store);
        tables.shared = shared
            .into_iter()
            .map(|s| {
                let name = s.name.clone();
                (name, Arc::new(SharedTable::new(s, tenant, redis.clone())))
            })
            .collect();
        tables
    }

    /// Table `name` if it is kept in memory.
    pub fn table(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    /// Table `name`, wherever it lives.
    pub fn get(&self, name: &str) -> Option<TableRef> {
        match self.tables.get(name) {
            Some(t) => Some(TableRef::Memory(t.clone())),
            None => self.shared.get(name).cloned().map(TableRef::Shared),
        }
    }

    /// The tables' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = (self.tables.keys().chain(self.shared.keys()))
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// Whether no table is kept in memory (and so there is no upkeep to
    /// do: Redis expires the others itself).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Load every table with a `dbtable` from the database; the error
    /// names the table.
    pub async fn load(&self, now: u64) -> anyhow::Result<()> {
        for name in self.tables.keys() {
            self.reload(name, now).await?;
        }
        Ok(())
    }

    /// Replace table `name`'s content with its database rows (its pending
    /// changes are dropped); how many items it has then. A table without
    /// a `dbtable` is left as it is.
    pub async fn reload(&self, name: &str, now: u64) -> anyhow::Result<usize> {
        if let Some(shared) = self.shared.get(name) {
            // Redis is the table's storage: nothing to load.
            return (shared.item_count().await).map_err(|e| anyhow::anyhow!("htable {name}: {e}"));
        }
        let table = self
            .table(name)
            .ok_or_else(|| anyhow::anyhow!("no htable {name:?}"))?;
        let (Some(dbtable), Some(p)) = (&table.spec.dbtable, &self.persistence) else {
            return Ok(table.len(now));
        };
        let rows = p.store.load(&p.tenant, dbtable).await.map_err(|e| {
            anyhow::anyhow!(
                "tenant {}: htable {name}: loading dbtable {dbtable}: {e}",
                p.tenant
            )
        })?;
        let (loaded, skipped) = table.load(rows, now);
        if skipped > 0 {
            tracing::warn!(
                tenant = p.tenant,
                htable = name,
                dbtable,
                skipped,
                max_items = table.spec.max_items,
                "rows left out: over max_items, over the size limits or not integers"
            );
        }
        Ok(loaded)
    }

    /// Write every table's pending changes back (tables with `dbmode`);
    /// how many rows were written. A failed write stays pending and the
    /// error names the table.
    pub async fn write_back(&self, now: u64) -> anyhow::Result<usize> {
        let Some(p) = &self.persistence else {
            return Ok(0);
        };
        let mut written = 0;
        for table in self.tables.values().filter(|t| t.spec.writes_back()) {
            let changes = table.take_changes(now);
            if changes.is_empty() {
                continue;
            }
            let dbtable = table.spec.dbtable.as_deref().unwrap_or_default();
            if let Err(e) = p.store.write(&p.tenant, dbtable, &changes).await {
                table.unwrite(&changes);
                anyhow::bail!(
                    "tenant {}: htable {}: writing dbtable {dbtable}: {e}",
                    p.tenant,
                    table.spec.name
                );
            }
            written += changes.upserts.len() + changes.deletes.len();
        }
        Ok(written)
    }

    /// Every table's series, by table name: items counted for those in
    /// memory (a table in Redis is shared by the nodes: counting it is a
    /// Redis scan, not a scrape's work).
    pub fn metric_series(&self, now: u64, out: &mut Vec<ModuleSeries>) {
        let mut tables: Vec<(&str, &TableCounters, Option<u64>)> = (self.tables.values())
            .map(|t| (t.spec.name.as_str(), &t.counters, Some(t.len(now) as u64)))
            .chain((self.shared.values()).map(|t| (t.spec().name.as_str(), t.counters(), None)))
            .collect();
        tables.sort_by_key(|(name, ..)| *name);
        for (name, counters, items) in tables {
            counters.metric_series(name, items, out);
        }
    }

    /// Remove expired items from every table; how many.
    pub fn purge_expired(&self, now: u64) -> usize {
        self.tables.values().map(|t| t.purge_expired(now)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i32) -> Option<PvValue> {
        Some(PvValue::Int(i))
    }

    fn text(s: &str) -> Option<PvValue> {
        Some(PvValue::Str(s.into()))
    }

    fn table(configure: impl FnOnce(&mut TableSpec)) -> Table {
        let mut spec = TableSpec::new("t");
        configure(&mut spec);
        Table::new(spec)
    }

    /// `(expired, removed, refused_full)` of `t`'s metrics.
    fn counted(t: &Table) -> (u64, u64, u64) {
        let mut out = Vec::new();
        t.counters().metric_series("t", None, &mut out);
        let value = |name: &str, reason: Option<&str>| {
            (out.iter())
                .find(|s| {
                    s.name == name && reason.is_none_or(|r| s.labels.iter().any(|(_, v)| v == r))
                })
                .map(|s| s.value)
                .expect("series")
        };
        (
            value("kemibox_htable_items_removed_total", Some("expired")),
            value("kemibox_htable_items_removed_total", Some("removed")),
            value("kemibox_htable_sets_refused_total", None),
        )
    }

    /// Each way an item goes is counted once, under its reason: expiry
    /// (purged, pushed out by a full table, replaced, or removed once
    /// expired) or removal; a set a full table refuses is counted too.
    #[test]
    fn items_gone_and_sets_refused_are_counted() {
        let t = table(|s| {
            s.max_items = 3;
            s.autoexpire = 10;
        });
        for key in ["a", "b", "c"] {
            t.set(key, PvValue::Int(1), None, 100).unwrap();
        }
        assert_eq!(
            t.set("d", PvValue::Int(1), None, 105),
            Err(HtError::Full(3))
        );
        assert_eq!(t.add("d", 1, 105), Err(HtError::Full(3)));
        assert_eq!(counted(&t), (0, 0, 2));
        // At 110 all three expired: a set into the full table drops them.
        t.set("d", PvValue::Int(1), None, 110).unwrap();
        assert_eq!(counted(&t), (3, 0, 2));
        assert!(t.remove("d", 111));
        assert!(!t.remove("d", 111));
        assert_eq!(counted(&t), (3, 1, 2));
        t.set("e", PvValue::Int(1), None, 111).unwrap();
        t.set("f", PvValue::Int(1), None, 111).unwrap();
        // "e" expired at 121: removing it counts an expiry, not a removal.
        assert!(!t.remove("e", 121));
        // "f" expired too: setting it again replaces an expired item.
        t.set("f", PvValue::Int(2), None, 121).unwrap();
        assert_eq!(counted(&t), (5, 1, 2));
        t.set("g", PvValue::Int(1), None, 121).unwrap();
        let all = Matcher::count_expr("**").unwrap();
        assert_eq!(t.remove_matching(Target::Name, &all, 125), 2);
        t.set("h", PvValue::Int(1), None, 125).unwrap();
        t.set("i", PvValue::Int(1), Some(1), 125).unwrap();
        assert_eq!(t.purge_expired(127), 1);
        assert_eq!(counted(&t), (6, 3, 2));
        t.reset(127);
        assert_eq!(counted(&t), (6, 4, 2));
        let mut out = Vec::new();
        t.counters().metric_series("t", Some(0), &mut out);
        let items = out.iter().find(|s| s.name == "kemibox_htable_items");
        assert_eq!(
            items.map(|s| (s.labels.clone(), s.value)),
            Some((vec![("table", "t".to_string())], 0))
        );
    }

    #[test]
    fn items_are_set_read_updated_and_removed() {
        let t = table(|s| s.initval = Some(7));
        assert_eq!(t.get("a", 100), None);
        assert_eq!(t.get_or_initval("a", 100), int(7));
        t.set("a", PvValue::Str("x".into()), None, 100).unwrap();
        assert_eq!(t.get("a", 100), text("x"));
        t.set("a", PvValue::Int(3), None, 100).unwrap();
        assert_eq!(t.get_or_initval("a", 100), int(3));
        assert_eq!(t.len(100), 1);
        assert!(t.remove("a", 100));
        assert!(!t.remove("a", 100));
        assert_eq!(t.get("a", 100), None);
    }

    /// Autoexpire counts from the set; updateexpire decides whether an
    /// update restarts it; an explicit expiry wins; expired items are
    /// invisible at once and purged later.
    #[test]
    fn expiry_follows_the_table_and_the_item() {
        let t = table(|s| s.autoexpire = 10);
        t.set("a", PvValue::Int(1), None, 100).unwrap();
        assert_eq!(t.expires_in("a", 100), 10);
        t.set("a", PvValue::Int(2), None, 105).unwrap();
        assert_eq!(t.expires_in("a", 105), 10, "updateexpire restarts it");
        assert_eq!(t.get("a", 114), int(2));
        assert_eq!(t.get("a", 115), None);
        assert_eq!(t.len(115), 0);
        assert_eq!(t.purge_expired(115), 1);
        assert_eq!(t.purge_expired(115), 0);

        let kept = table(|s| {
            s.autoexpire = 10;
            s.updateexpire = false;
        });
        kept.set("a", PvValue::Int(1), None, 100).unwrap();
        kept.set("a", PvValue::Int(2), None, 105).unwrap();
        assert_eq!(kept.expires_in("a", 105), 5, "updates keep the expiry");
        kept.set("b", PvValue::Int(1), Some(60), 100).unwrap();
        assert_eq!(kept.expires_in("b", 100), 60);
        kept.set_expire("b", 0, 100);
        assert_eq!(kept.expires_in("b", 100), 0);
        assert_eq!(kept.get("b", 10_000), int(1), "0: never expires");
        kept.set_expire("b", 5, 100);
        assert_eq!(kept.get("b", 105), None);
        kept.set_expire("missing", 5, 100);
        assert_eq!(kept.get("missing", 100), None);

        // Without autoexpire nothing expires, as in Kamailio.
        let never = table(|_| {});
        never.set("a", PvValue::Int(1), Some(5), 100).unwrap();
        never.set_expire("a", 5, 100);
        assert_eq!(never.expires_in("a", 100), 0);
        assert_eq!(never.get("a", 1_000_000), int(1));
    }

    /// A full table refuses new keys (updates still work) until an item
    /// expires or is removed.
    #[test]
    fn a_full_table_refuses_new_keys() {
        let t = table(|s| {
            s.max_items = 2;
            s.autoexpire = 3600;
        });
        t.set("a", PvValue::Int(1), Some(5), 100).unwrap();
        t.set("b", PvValue::Int(1), None, 100).unwrap();
        assert_eq!(
            t.set("c", PvValue::Int(1), None, 100),
            Err(HtError::Full(2))
        );
        assert_eq!(t.add("c", 1, 100), Err(HtError::Full(2)));
        t.set("b", PvValue::Int(2), None, 100).unwrap();
        t.set("c", PvValue::Int(1), None, 105).unwrap();
        assert_eq!(t.len(105), 2);
        assert_eq!(TableSpec::new("x").max_items, 16 * ITEMS_PER_SLOT);
        assert_eq!(
            TableSpec::default_max_items(31),
            (1 << MAX_EFFECTIVE_SIZE) * ITEMS_PER_SLOT
        );
    }

    #[test]
    fn keys_and_values_over_the_limits_are_refused() {
        let t = table(|_| {});
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            t.set(&long, PvValue::Int(1), None, 1),
            Err(HtError::KeyTooLong(MAX_KEY_BYTES + 1))
        );
        assert_eq!(
            t.add(&long, 1, 1),
            Err(HtError::KeyTooLong(MAX_KEY_BYTES + 1))
        );
        let big = PvValue::Str("v".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(
            t.set("k", big, None, 1),
            Err(HtError::ValueTooLong(MAX_VALUE_BYTES + 1))
        );
        assert_eq!(t.len(1), 0);
    }

    #[test]
    fn increments_start_at_initval_and_refuse_strings() {
        let t = table(|_| {});
        assert_eq!(t.add("n", 1, 1), Ok(1));
        assert_eq!(t.add("n", 1, 1), Ok(2));
        assert_eq!(t.add("m", -1, 1), Ok(-1));
        t.set("s", PvValue::Str("x".into()), None, 1).unwrap();
        assert_eq!(t.add("s", 1, 1), Err(HtError::NotInteger));
        t.set("max", PvValue::Int(i32::MAX), None, 1).unwrap();
        assert_eq!(t.add("max", 1, 1), Ok(i32::MIN));
        let from = table(|s| s.initval = Some(10));
        assert_eq!(from.add("n", 1, 1), Ok(11));
    }

    #[test]
    fn matchers() {
        let m = |op: &str, v: &str, s: &str| Matcher::new(op, v).unwrap().matches(s);
        assert!(m("eq", "10.0.0.1", "10.0.0.1"));
        assert!(!m("eq", "10.0.0.1", "10.0.0.10"));
        assert!(m("ne", "a", "b"));
        assert!(!m("ne", "a", "a"));
        assert!(m("re", "^10\\.0\\.", "10.0.0.1"));
        assert!(!m("re", "^10\\.0\\.", "110.0.0.1"));
        assert!(m("sw", "10.", "10.0.0.1"));
        assert!(!m("sw", "0.", "10.0.0.1"));
        assert!(m("fm", "10.*.1", "10.0.0.1"));
        assert!(m("fm", "a?c", "abc"));
        assert!(!m("fm", "a?c", "abbc"));
        assert!(m("fm", "*", ""));
        assert!(!m("fm", "a*b", "aXbY"));
        assert!(Matcher::new("xx", "a").unwrap_err().contains("unsupported"));
        assert!(
            Matcher::new("re", "(")
                .unwrap_err()
                .contains("bad regular expression")
        );
        // Over the compiled-size limit: refused, never built.
        assert!(Matcher::regex("(a{1000}){1000}").is_err());
        let c = |e: &str, s: &str| Matcher::count_expr(e).unwrap().matches(s);
        assert!(c("**", "anything"));
        assert!(c("==ab", "ab") && !c("==ab", "abc"));
        assert!(c("~~^a.c$", "abc"));
        assert!(c("%~ab", "abc") && !c("%~bc", "abc"), "starts with");
        assert!(c("~%bc", "abc") && !c("~%ab", "abc"), "ends with");
        assert!(
            c("B", "abc"),
            "a plain expression is a regular expression, any case"
        );
        assert!(Matcher::count_expr("eqx").is_err());
        assert!(
            m("re", "^B$", "a\nb"),
            "case-insensitive, ^ and $ at line ends"
        );
    }

    /// Name matches look at keys; value matches at string values only.
    #[test]
    fn matching_counting_and_removing() {
        let t = table(|s| s.autoexpire = 3600);
        t.set("10.0.0.1", PvValue::Int(1), None, 1).unwrap();
        t.set("10.0.0.2", PvValue::Str("scanner".into()), None, 1)
            .unwrap();
        t.set("192.0.2.1", PvValue::Str("1".into()), Some(5), 1)
            .unwrap();
        let sw = Matcher::new("sw", "10.").unwrap();
        assert!(t.any_match(Target::Name, &sw, 1));
        assert_eq!(t.count_matching(Target::Name, &sw, 1), 2);
        let one = Matcher::new("eq", "1").unwrap();
        assert_eq!(
            t.count_matching(Target::Value, &one, 1),
            1,
            "the integer 1 is not the string 1"
        );
        let int_one = Matcher::count_expr("eq1").unwrap();
        assert_eq!(t.count_matching(Target::Value, &int_one, 1), 1);
        assert_eq!(t.count_matching(Target::Name, &int_one, 1), 0);
        assert_eq!(t.count_matching(Target::Value, &Matcher::All, 1), 3);
        assert!(
            !t.any_match(Target::Value, &one, 10),
            "expired items never match"
        );
        assert_eq!(
            t.remove_matching(Target::Value, &Matcher::regex("scan").unwrap(), 1),
            1
        );
        assert_eq!(t.remove_matching(Target::Name, &sw, 1), 1);
        assert_eq!(t.len(1), 1);
        t.reset(1);
        assert_eq!(t.len(1), 0);
    }

    /// Stored rows load (arrays, integers, expiry, the cap), and a table
    /// with dbmode hands over exactly what changed.
    #[test]
    fn rows_load_and_changes_are_handed_over() {
        let row = |key: &str, key_type, value_type, value: &str, expires| HtableRow {
            key_name: key.into(),
            key_type,
            value_type,
            key_value: value.into(),
            expires,
        };
        let t = table(|s| {
            s.max_items = 6;
            s.autoexpire = 1000;
            s.dbtable = Some("ht".into());
            s.dbmode = true;
        });
        let (loaded, skipped) = t.load(
            vec![
                row("a", KEY_PLAIN, VALUE_INT, "5", 0),
                row("b", KEY_PLAIN, VALUE_STR, "x", 200),
                row("old", KEY_PLAIN, VALUE_STR, "x", 50),
                row("bad", KEY_PLAIN, VALUE_INT, "x", 0),
                row("arr", KEY_ARRAY, VALUE_STR, "v0", 0),
                row("arr", KEY_ARRAY, VALUE_STR, "v1", 0),
                row("last", KEY_PLAIN, VALUE_STR, "x", 0),
            ],
            100,
        );
        // "bad" is not an integer.
        assert_eq!((loaded, skipped), (6, 1));
        assert_eq!(t.get("a", 100), int(5));
        assert_eq!(t.expires_in("b", 100), 100);
        assert_eq!(t.get("arr[1]", 100), text("v1"));
        assert_eq!(t.get("over", 100), None);
        assert_eq!(t.get("old", 100), None);
        assert!(t.take_changes(100).is_empty(), "loading changes nothing");

        t.set("a", PvValue::Int(6), None, 100).unwrap();
        t.remove("b", 100);
        let mut changes = t.take_changes(100);
        changes.deletes.sort();
        assert_eq!(
            changes,
            HtableChanges {
                clear: false,
                upserts: vec![row("a", KEY_PLAIN, VALUE_INT, "6", 1100)],
                deletes: vec!["b".into()],
            }
        );
        assert!(t.take_changes(100).is_empty());
        t.unwrite(&changes);
        assert_eq!(t.take_changes(100).upserts.len(), 1);
        t.reset(100);
        assert!(t.take_changes(100).clear);

        // Tables without dbmode keep nothing pending.
        let plain = table(|s| s.dbtable = Some("ht".into()));
        plain.set("a", PvValue::Int(1), None, 1).unwrap();
        assert!(plain.take_changes(1).is_empty());
    }

    /// Pending keys stay bounded: past twice the capacity the table is
    /// rewritten whole.
    #[test]
    fn pending_changes_stay_bounded() {
        let t = table(|s| {
            s.max_items = 2;
            s.dbtable = Some("ht".into());
            s.dbmode = true;
        });
        for i in 0..50 {
            let key = format!("k{i}");
            t.set(&key, PvValue::Int(i), None, 1).unwrap();
            t.remove(&key, 1);
        }
        let changes = t.take_changes(1);
        assert!(changes.clear);
        assert!(changes.deletes.len() <= 5, "{}", changes.deletes.len());
    }

    /// Write-back and reload through a real SQLite store.
    #[tokio::test]
    async fn tables_write_back_and_reload() {
        let store: Arc<dyn HtableStore> =
            Arc::new(kemibox_store::SqliteStore::open_in_memory().unwrap());
        let spec = |name: &str, dbmode| TableSpec {
            dbtable: Some(format!("{name}_db")),
            dbmode,
            ..TableSpec::new(name)
        };
        let tables = Htables::new(
            vec![
                spec("ipban", true),
                spec("ro", false),
                TableSpec::new("mem"),
            ],
            "t1",
            Some(store.clone()),
        );
        let ipban = tables.table("ipban").unwrap();
        ipban.set("10.0.0.1", PvValue::Int(1), None, 100).unwrap();
        tables
            .table("ro")
            .unwrap()
            .set("x", PvValue::Int(1), None, 100)
            .unwrap();
        assert_eq!(tables.write_back(100).await.unwrap(), 1);
        assert_eq!(tables.write_back(100).await.unwrap(), 0);

        let again = Htables::new(
            vec![
                spec("ipban", true),
                spec("ro", false),
                TableSpec::new("mem"),
            ],
            "t1",
            Some(store.clone()),
        );
        again.load(100).await.unwrap();
        assert_eq!(again.table("ipban").unwrap().get("10.0.0.1", 100), int(1));
        assert_eq!(again.table("ro").unwrap().len(100), 0);
        // Another tenant's tables of the same names see nothing.
        let other = Htables::new(vec![spec("ipban", true)], "t2", Some(store));
        other.load(100).await.unwrap();
        assert_eq!(other.table("ipban").unwrap().len(100), 0);
        assert!(again.reload("nope", 100).await.is_err());
        assert_eq!(again.names(), vec!["ipban", "mem", "ro"]);
    }
}
