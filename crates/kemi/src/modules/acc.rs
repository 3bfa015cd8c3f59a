//! `KSR.acc`: accounting (Kamailio's acc module), per tenant.
//!
//! Two ways a record is made. The script accounts the current request at
//! once (`acc_log_request`, `acc_db_request`, `acc_request`). Or the
//! tenant configures flags (`[acc]` log_flag, db_flag, log_missed_flag,
//! db_missed_flag, failed_transaction_flag) and the proxy tells [`Acc`]
//! when a transaction whose request carries them completes
//! ([`Acc::reply_out`]) or when all its branches failed
//! ([`Acc::branches_failed`]), as Kamailio's tm callbacks tell its acc
//! module:
//!
//! - a final 2xx reply sent upstream, with log_flag / db_flag set: a record
//!   in the log / the `acc` table ("transaction answered");
//! - a negative final reply: the same, only when failed_transaction_flag is
//!   set too (and the code is not in `failed_filter`);
//! - an INVITE whose branches all failed, or whose final reply is
//!   negative, with log_missed_flag / db_missed_flag set: a record in the
//!   log / the `missed_calls` table ("call missed"), once: the missed
//!   flags are then reset on the transaction, so a failure route that
//!   forks again sets them again to account the next attempt.
//!
//! Extra columns (`log_extra`, `db_extra`: `name=$pv;...`) are evaluated
//! when a route on the request ends with one of the flags set ([`capture`]),
//! through the same reader as `KSR.pv.get`, since the transaction ends
//! later, outside any script.
//!
//! Database records go to the process's [`AccWriter`] (a queue; writing
//! never waits on the SIP path) with the tenant as a column.

use std::time::{SystemTime, UNIX_EPOCH};

use kemibox_sip::SipMessage;
use kemibox_store::{AccRecord, AccWriter, is_core_column, is_identifier};

use crate::bindings::kemibox::ksr::acc::Host;
use crate::{Ctx, Message, TenantId, pv_name};

/// One extra column: its name and the pseudo-variable giving its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccExtra {
    pub name: String,
    pub pv: String,
}

/// Parse Kamailio's extra syntax, `name=$pv;name2=$pv2` (spaces around
/// the parts ignored, an empty text is no extra). The error says which
/// part is wrong and why.
pub fn parse_extra(text: &str) -> Result<Vec<AccExtra>, String> {
    let mut out: Vec<AccExtra> = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, pv)) = part.split_once('=') else {
            return Err(format!("{part:?} is not name=$pv"));
        };
        let (name, pv) = (name.trim(), pv.trim());
        if !is_identifier(name) {
            return Err(format!(
                "{name:?} cannot be a column name (letters, digits and _, not starting with a digit, at most 63)"
            ));
        }
        if is_core_column(name) {
            return Err(format!("{name:?} is a column every acc record has already"));
        }
        if out.iter().any(|e| e.name.eq_ignore_ascii_case(name)) {
            return Err(format!("{name:?} is given twice"));
        }
        if pv_name::parse(pv).is_none() {
            return Err(format!(
                "{pv:?} is not a pseudo-variable ($si, $rU, $hdr(X), ...)"
            ));
        }
        out.push(AccExtra {
            name: name.to_string(),
            pv: pv.to_string(),
        });
    }
    Ok(out)
}

/// A tenant's acc settings: Kamailio's module parameters of the same
/// names. A flag is a message flag index (0..31), `None` when not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccSettings {
    pub log_flag: Option<u8>,
    pub log_missed_flag: Option<u8>,
    pub db_flag: Option<u8>,
    pub db_missed_flag: Option<u8>,
    pub failed_transaction_flag: Option<u8>,
    /// Negative codes not accounted by failed_transaction_flag.
    pub failed_filter: Vec<u16>,
    pub log_extra: Vec<AccExtra>,
    pub db_extra: Vec<AccExtra>,
    /// Kamailio's db_table_acc.
    pub db_table_acc: String,
    /// Kamailio's db_table_missed_calls.
    pub db_table_missed_calls: String,
}

impl Default for AccSettings {
    fn default() -> AccSettings {
        AccSettings {
            log_flag: None,
            log_missed_flag: None,
            db_flag: None,
            db_missed_flag: None,
            failed_transaction_flag: None,
            failed_filter: Vec::new(),
            log_extra: Vec::new(),
            db_extra: Vec::new(),
            db_table_acc: "acc".into(),
            db_table_missed_calls: "missed_calls".into(),
        }
    }
}

/// The extra values of a request, evaluated when its route ended with an
/// accounting flag set: `(column, value)`, `None` for `$null`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccCaptured {
    pub log: Vec<(String, Option<String>)>,
    pub db: Vec<(String, Option<String>)>,
}

/// A tenant's accounting: its settings and where database records go
/// (`None`: no database, e.g. `kemibox route`).
#[derive(Debug, Default)]
pub struct Acc {
    pub settings: AccSettings,
    pub writer: Option<AccWriter>,
}

/// The leading text of a log record, by what made it (Kamailio's).
const ANSWERED: &str = "ACC: transaction answered: ";
const MISSED: &str = "ACC: call missed: ";
const REQUEST: &str = "ACC: request accounted: ";

fn is_set(flags: u32, flag: Option<u8>) -> bool {
    flag.is_some_and(|f| f < 32 && flags & (1 << f) != 0)
}

/// The end of a transaction, as the proxy saw it.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The request as routed, with the transaction's flags.
    pub request: &'a Message,
    pub code: u16,
    pub reason: &'a str,
    /// The To tag of the reply (or of the request when the reply has none).
    pub to_tag: Option<&'a str>,
}

/// The facts of a record before it goes to the log or a table.
struct Facts<'a> {
    method: &'a str,
    from_tag: &'a str,
    to_tag: &'a str,
    callid: &'a str,
    code: String,
    reason: &'a str,
    time: u64,
}

impl<'a> Facts<'a> {
    /// `None` when the request lacks what every record has (From, To,
    /// Call-ID, CSeq), as Kamailio's acc refuses such a request.
    fn of(
        sip: &'a SipMessage,
        code: String,
        reason: &'a str,
        to_tag: Option<&'a str>,
    ) -> Option<Self> {
        let from = sip.from()?;
        let to = sip.to()?;
        let (_, method) = sip.cseq()?;
        Some(Facts {
            method,
            from_tag: from.tag().unwrap_or(""),
            to_tag: to_tag.or(to.tag()).unwrap_or(""),
            callid: sip.call_id()?,
            code,
            reason,
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }

    /// Kamailio's log line: `ACC: ...: timestamp=N;method=...;...`.
    fn log(&self, tenant: &TenantId, text: &str, extra: &[(String, Option<String>)]) {
        let mut line = format!(
            "{text}timestamp={};method={};from_tag={};to_tag={};call_id={};code={};reason={}",
            self.time, self.method, self.from_tag, self.to_tag, self.callid, self.code, self.reason
        );
        for (name, value) in extra {
            line.push(';');
            line.push_str(name);
            line.push('=');
            line.push_str(value.as_deref().unwrap_or(""));
        }
        tracing::info!(target: "kemibox::acc", tenant = tenant.as_str(), "{line}");
    }

    fn record(
        &self,
        tenant: &TenantId,
        table: &str,
        extra: &[(String, Option<String>)],
    ) -> AccRecord {
        AccRecord {
            tenant: tenant.to_string(),
            table: table.to_string(),
            method: self.method.to_string(),
            from_tag: self.from_tag.to_string(),
            to_tag: self.to_tag.to_string(),
            callid: self.callid.to_string(),
            sip_code: self.code.clone(),
            sip_reason: self.reason.to_string(),
            time: self.time,
            extra: extra.to_vec(),
        }
    }
}

impl Acc {
    /// Whether a transaction whose request carries `flags` is accounted
    /// at all (Kamailio installs its callbacks only for these): one of the
    /// acc or missed-call flags is set.
    pub fn interested(&self, flags: u32) -> bool {
        let s = &self.settings;
        [s.log_flag, s.db_flag, s.log_missed_flag, s.db_missed_flag]
            .into_iter()
            .any(|f| is_set(flags, f))
    }

    /// Whether extra values need capturing for `flags`.
    fn captures(&self, flags: u32) -> bool {
        (!self.settings.log_extra.is_empty() || !self.settings.db_extra.is_empty())
            && self.interested(flags)
    }

    /// Queue a database record; false (logged) when it cannot be.
    fn to_db(&self, record: AccRecord) -> bool {
        match &self.writer {
            Some(w) => w.submit(record),
            None => {
                tracing::warn!(tenant = %record.tenant, table = %record.table, callid = %record.callid, "acc: no database for the record");
                false
            }
        }
    }

    /// The missed-call record of an INVITE ending with `c.code` >= 300,
    /// when a missed flag is set; the flags to reset on the transaction.
    fn missed(&self, tenant: &TenantId, c: Completion<'_>) -> u32 {
        let s = &self.settings;
        let flags = c.request.flags;
        let (log, db) = (
            is_set(flags, s.log_missed_flag),
            is_set(flags, s.db_missed_flag),
        );
        if c.code < 300 || c.request.sip.method_str() != "INVITE" || !(log || db) {
            return 0;
        }
        let Some(facts) = Facts::of(&c.request.sip, c.code.to_string(), c.reason, c.to_tag) else {
            return 0;
        };
        let captured = c.request.acc.clone().unwrap_or_default();
        let mut reset = 0;
        if log {
            facts.log(tenant, MISSED, &captured.log);
            reset |= 1 << s.log_missed_flag.unwrap_or(0);
        }
        if db {
            self.to_db(facts.record(tenant, &s.db_table_missed_calls, &captured.db));
            reset |= 1 << s.db_missed_flag.unwrap_or(0);
        }
        reset
    }

    /// Every branch of the transaction failed, before its failure route
    /// (Kamailio's TMCB_ON_FAILURE): a missed call for an INVITE with a
    /// missed flag. The flags the proxy must reset on the transaction.
    pub fn branches_failed(&self, tenant: &TenantId, c: Completion<'_>) -> u32 {
        self.missed(tenant, c)
    }

    /// The transaction's final reply went upstream (Kamailio's
    /// TMCB_RESPONSE_OUT): a missed call (an INVITE's negative reply with
    /// a missed flag still set), and the transaction's record when it is
    /// a 2xx with an acc flag, or negative with failed_transaction_flag
    /// too. The flags the proxy must reset on the transaction.
    pub fn reply_out(&self, tenant: &TenantId, c: Completion<'_>) -> u32 {
        let s = &self.settings;
        let flags = c.request.flags;
        let reset = self.missed(tenant, c);
        if c.code < 200 {
            return reset;
        }
        if c.code >= 300
            && (!is_set(flags, s.failed_transaction_flag) || s.failed_filter.contains(&c.code))
        {
            return reset;
        }
        let (log, db) = (is_set(flags, s.log_flag), is_set(flags, s.db_flag));
        if !(log || db) {
            return reset;
        }
        let Some(facts) = Facts::of(&c.request.sip, c.code.to_string(), c.reason, c.to_tag) else {
            return reset;
        };
        let captured = c.request.acc.clone().unwrap_or_default();
        if log {
            facts.log(tenant, ANSWERED, &captured.log);
        }
        if db {
            self.to_db(facts.record(tenant, &s.db_table_acc, &captured.db));
        }
        reset
    }
}

/// Evaluate the tenant's extra columns on the request in `ctx` when it
/// carries an accounting flag: called as a route on a request ends, so
/// the values are those the script left (`$rU` after a rewrite).
pub(crate) async fn capture(ctx: &mut Ctx) {
    let acc = &ctx.state.acc;
    let Some(m) = ctx.message.as_ref() else {
        return;
    };
    if !m.sip.is_request() || !acc.captures(m.flags) {
        return;
    }
    let captured = ctx.acc_extras().await;
    if let Some(m) = ctx.message.as_mut() {
        m.acc = Some(captured);
    }
}

/// Kamailio's comment: "200 OK" is code 200 and reason "OK"; text without
/// a leading 3-digit code is all reason, with an empty code.
fn parse_comment(comment: &str) -> Result<(String, &str), &'static str> {
    if comment.is_empty() {
        return Err("empty comment");
    }
    if comment.contains('$') {
        return Err("variables in the comment are not expanded through KEMI");
    }
    let b = comment.as_bytes();
    if b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) {
        Ok((comment[..3].to_string(), comment[3..].trim_start()))
    } else {
        Ok((String::new(), comment))
    }
}

impl Ctx {
    /// The tenant's extra columns (log and database) read on the message
    /// being routed, now, through the pseudo-variable reader (a `$sht` of
    /// a table in Redis reads Redis).
    async fn acc_extras(&self) -> AccCaptured {
        AccCaptured {
            log: self.acc_read(&self.state.acc.settings.log_extra).await,
            db: self.acc_read(&self.state.acc.settings.db_extra).await,
        }
    }

    /// `extras`' names and values.
    async fn acc_read(&self, extras: &[AccExtra]) -> Vec<(String, Option<String>)> {
        let mut values = Vec::with_capacity(extras.len());
        for e in extras {
            let value = self.pv_value(&e.pv).await.ok().flatten();
            values.push((e.name.clone(), value.map(|v| v.as_text())));
        }
        values
    }

    /// The facts of a record of the current request for `comment`, or the
    /// error logged under `function`.
    async fn acc_request_facts<T>(
        &mut self,
        function: &str,
        comment: &str,
        then: impl FnOnce(&Ctx, &Facts<'_>, &AccCaptured) -> T,
    ) -> Option<T> {
        let (code, reason) = match parse_comment(comment) {
            Ok(parsed) => parsed,
            Err(why) => {
                self.script_error(
                    function,
                    format!("{why}: {comment:?} (expected \"CODE reason\")"),
                );
                return None;
            }
        };
        // No message, no record (and no extras to read).
        self.message.as_ref()?;
        // Extras at the time of the call, as Kamailio evaluates them.
        let captured = self.acc_extras().await;
        let m = self.message.as_ref()?;
        match Facts::of(&m.sip, code, reason, None) {
            Some(facts) => Some(then(self, &facts, &captured)),
            None => {
                self.script_error(function, "the message lacks From, To, Call-ID or CSeq");
                None
            }
        }
    }

    async fn acc_log(&mut self, function: &str, comment: &str) -> i32 {
        self.acc_request_facts(function, comment, |ctx, facts, captured| {
            facts.log(&ctx.tenant, REQUEST, &captured.log);
        })
        .await
        .map_or(-1, |()| 1)
    }

    async fn acc_db(&mut self, function: &str, comment: &str, table: &str) -> i32 {
        if !is_identifier(table) {
            self.script_error(
                function,
                format!(
                    "table {table:?} is not an SQL identifier (letters, digits and _, at most 63)"
                ),
            );
            return -1;
        }
        if self.state.acc.writer.is_none() {
            self.script_error(function, "no database for acc records");
            return -1;
        }
        let queued = self
            .acc_request_facts(function, comment, |ctx, facts, captured| {
                ctx.state
                    .acc
                    .to_db(facts.record(&ctx.tenant, table, &captured.db))
            })
            .await;
        match queued {
            Some(true) => 1,
            Some(false) => {
                self.script_error(function, "the acc write queue is full: record dropped");
                -1
            }
            None => -1,
        }
    }
}

impl Host for Ctx {
    async fn acc_log_request(&mut self, comment: String) -> i32 {
        self.acc_log("KSR.acc.acc_log_request", &comment).await
    }

    async fn acc_db_request(&mut self, comment: String, table: String) -> i32 {
        self.acc_db("KSR.acc.acc_db_request", &comment, &table)
            .await
    }

    async fn acc_request(&mut self, comment: String, table: String) -> i32 {
        let function = "KSR.acc.acc_request";
        let logged = self.acc_log(function, &comment).await;
        if logged < 0 || self.state.acc.writer.is_none() {
            return logged;
        }
        self.acc_db(function, &comment, &table).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use kemibox_metrics::AccMetrics;
    use kemibox_store::{AccBackend, SqliteAcc};

    use super::*;
    use crate::testing::{INVITE, ctx_on, ready};
    use crate::{TenantState, Transport};

    fn settings() -> AccSettings {
        AccSettings {
            log_flag: Some(1),
            db_flag: Some(1),
            log_missed_flag: Some(2),
            db_missed_flag: Some(2),
            failed_transaction_flag: Some(3),
            db_extra: parse_extra("src_ip=$si; dst_user=$rU").unwrap(),
            log_extra: parse_extra("ua=$hdr(User-Agent)").unwrap(),
            ..AccSettings::default()
        }
    }

    /// A tenant state writing into an in-memory SQLite database, and that
    /// database's connection.
    #[allow(
        clippy::field_reassign_with_default,
        reason = "other modules' fields of TenantState stay at their defaults"
    )]
    fn state() -> (
        Arc<TenantState>,
        Arc<std::sync::Mutex<rusqlite::Connection>>,
    ) {
        let sqlite = SqliteAcc::open_in_memory().unwrap();
        let db = sqlite.connection();
        let backend: Box<dyn AccBackend> = Box::new(sqlite);
        let writer = AccWriter::spawn(backend, 100, Arc::new(AccMetrics::default()));
        let mut state = TenantState::default();
        state.acc = Acc {
            settings: settings(),
            writer: Some(writer),
        };
        (Arc::new(state), db)
    }

    /// `(table, method, callid, from_tag, to_tag, sip_code, sip_reason, src_ip, dst_user)`.
    type Row = Vec<Option<String>>;

    fn rows(db: &std::sync::Mutex<rusqlite::Connection>, table: &str) -> Vec<Row> {
        let db = db.lock().unwrap();
        let Ok(mut s) = db.prepare(&format!(
            "SELECT tenant, method, callid, from_tag, to_tag, sip_code, sip_reason, src_ip, dst_user FROM {table} ORDER BY id"
        )) else {
            return Vec::new();
        };
        s.query_map([], |r| (0..9).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A row as text, `-` standing for NULL.
    fn some(v: &[&str]) -> Row {
        v.iter()
            .map(|s| (*s != "-").then(|| s.to_string()))
            .collect()
    }

    async fn flushed(state: &TenantState) {
        let writer = state.acc.writer.as_ref().unwrap();
        assert_eq!(writer.flush(Duration::from_secs(10)).await, 0);
    }

    #[test]
    fn extras_parse_as_kamailio_writes_them() {
        assert_eq!(
            parse_extra(" src_ip=$si ;dst_user=$rU;").unwrap(),
            [
                AccExtra {
                    name: "src_ip".into(),
                    pv: "$si".into()
                },
                AccExtra {
                    name: "dst_user".into(),
                    pv: "$rU".into()
                }
            ]
        );
        assert!(parse_extra("").unwrap().is_empty());
        for (bad, why) in [
            ("src_ip", "is not name=$pv"),
            ("1x=$si", "cannot be a column name"),
            ("callid=$ci", "every acc record has"),
            ("a=$si;A=$rU", "twice"),
            ("a=si", "not a pseudo-variable"),
        ] {
            let err = parse_extra(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn comments_split_into_code_and_reason() {
        assert_eq!(parse_comment("200 OK"), Ok(("200".into(), "OK")));
        assert_eq!(parse_comment("486Busy"), Ok(("486".into(), "Busy")));
        assert_eq!(parse_comment("note"), Ok((String::new(), "note")));
        assert!(parse_comment("").is_err());
        assert!(parse_comment("200 $rm").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn script_records_go_to_the_log_and_the_named_table() {
        let (state, db) = state();
        let mut ctx = ctx_on(INVITE, Transport::Udp);
        ctx.state = state.clone();
        assert_eq!(
            ready(ctx.acc_db_request("200 OK".into(), "calls".into())),
            1
        );
        assert_eq!(
            ready(ctx.acc_request("404 Not Here".into(), "acc".into())),
            1
        );
        assert_eq!(ready(ctx.acc_log_request("note".into())), 1);
        for (comment, table) in [("", "acc"), ("200 $rm", "acc"), ("200 OK", "bad table")] {
            assert_eq!(
                ready(ctx.acc_db_request(comment.into(), table.into())),
                -1,
                "{comment:?} {table:?}"
            );
        }
        assert_eq!(ready(ctx.acc_log_request(String::new())), -1);
        flushed(&state).await;
        let call = "call-1@192.0.2.7";
        assert_eq!(
            rows(&db, "calls"),
            [some(&[
                "t1",
                "INVITE",
                call,
                "a1",
                "",
                "200",
                "OK",
                "192.0.2.7",
                "bob"
            ])]
        );
        assert_eq!(
            rows(&db, "acc"),
            [some(&[
                "t1",
                "INVITE",
                call,
                "a1",
                "",
                "404",
                "Not Here",
                "192.0.2.7",
                "bob"
            ])]
        );
        let logs = crate::testing::logs(&ctx);
        assert_eq!(logs.len(), 4, "one error line per refusal: {logs:?}");

        // Without a database, the database functions fail and the log
        // still works.
        let mut bare = ctx_on(INVITE, Transport::Udp);
        assert_eq!(
            ready(bare.acc_db_request("200 OK".into(), "acc".into())),
            -1
        );
        assert_eq!(ready(bare.acc_request("200 OK".into(), "acc".into())), 1);
    }

    /// The INVITE routed with `flags`, its extras captured as the route ended.
    fn routed(state: &Arc<TenantState>, flags: u32) -> Message {
        let mut ctx = ctx_on(INVITE, Transport::Udp);
        ctx.state = state.clone();
        ctx.message.as_mut().unwrap().flags = flags;
        ready(ctx.take_message()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn transactions_are_accounted_by_their_flags() {
        let (state, db) = state();
        let tenant: TenantId = "t1".parse().unwrap();
        let acc = &state.acc;
        fn done<'a>(request: &'a Message, code: u16, reason: &'a str) -> Completion<'a> {
            Completion {
                request,
                code,
                reason,
                to_tag: Some("b7"),
            }
        }

        // Answered, with the acc flag: one acc row, extras captured.
        let answered = routed(&state, 1 << 1);
        assert_eq!(
            answered.acc.as_ref().unwrap().db[0],
            ("src_ip".into(), Some("192.0.2.7".into()))
        );
        assert_eq!(acc.reply_out(&tenant, done(&answered, 200, "OK")), 0);
        // A negative reply without the failed flag is not accounted.
        assert_eq!(acc.reply_out(&tenant, done(&answered, 486, "Busy Here")), 0);
        // With it, it is.
        let failed = routed(&state, (1 << 1) | (1 << 3));
        acc.reply_out(&tenant, done(&failed, 503, "Unavailable"));

        // Missed: all branches failed; the missed flags are reset, so the
        // final reply does not account it twice.
        let mut missed = routed(&state, 1 << 2);
        let reset = acc.branches_failed(&tenant, done(&missed, 486, "Busy Here"));
        assert_eq!(reset, 1 << 2);
        missed.flags &= !reset;
        assert_eq!(acc.reply_out(&tenant, done(&missed, 486, "Busy Here")), 0);
        // Missed on the final reply when no failure processing reset it;
        // a 2xx is no missed call.
        let late = routed(&state, 1 << 2);
        assert_eq!(acc.reply_out(&tenant, done(&late, 200, "OK")), 0);
        assert_eq!(acc.reply_out(&tenant, done(&late, 480, "Gone")), 1 << 2);
        // No flag: nothing, and nothing captured.
        let plain = routed(&state, 0);
        assert!(plain.acc.is_none() && !acc.interested(0));
        acc.reply_out(&tenant, done(&plain, 200, "OK"));

        flushed(&state).await;
        let call = "call-1@192.0.2.7";
        assert_eq!(
            rows(&db, "acc"),
            [
                some(&[
                    "t1",
                    "INVITE",
                    call,
                    "a1",
                    "b7",
                    "200",
                    "OK",
                    "192.0.2.7",
                    "bob"
                ]),
                some(&[
                    "t1",
                    "INVITE",
                    call,
                    "a1",
                    "b7",
                    "503",
                    "Unavailable",
                    "192.0.2.7",
                    "bob"
                ]),
            ]
        );
        let missed_rows = rows(&db, "missed_calls");
        let codes: Vec<_> = missed_rows.iter().map(|r| r[5].clone().unwrap()).collect();
        assert_eq!(codes, ["486", "480"]);
    }

    #[test]
    #[allow(
        clippy::field_reassign_with_default,
        reason = "other modules' fields of TenantState stay at their defaults"
    )]
    fn only_invites_are_missed_calls() {
        let mut state = TenantState::default();
        state.acc.settings = settings();
        let state = Arc::new(state);
        let bye = INVITE
            .replace("INVITE sip:", "BYE sip:")
            .replace("1 INVITE", "1 BYE");
        let mut ctx = ctx_on(&bye, Transport::Udp);
        ctx.state = state.clone();
        ctx.message.as_mut().unwrap().flags = 1 << 2;
        let m = ready(ctx.take_message()).unwrap();
        let c = Completion {
            request: &m,
            code: 481,
            reason: "No Transaction",
            to_tag: None,
        };
        assert_eq!(state.acc.reply_out(&"t1".parse().unwrap(), c), 0);
    }
}
