//! `KSR.xlog`: Kamailio's xlog, log lines with pseudo-variables expanded
//! by the shared format expander (`Ctx::pv_format`), written through
//! [`Ctx::log`] so they carry the tenant and show in `kemibox route`.

use crate::bindings::kemibox::ksr::xlog::Host;
use crate::{Ctx, Level};

/// Kamailio's xlog level names (any case); unknown ones log at ERROR.
/// ALERT, BUG and CRIT2 have no level of their own here: CRITICAL.
fn level(name: &str) -> Level {
    match name.to_ascii_lowercase().as_str() {
        "l_dbg" => Level::Dbg,
        "l_info" => Level::Info,
        "l_notice" => Level::Notice,
        "l_warn" => Level::Warn,
        "l_crit" | "l_crit2" | "l_alert" | "l_bug" => Level::Crit,
        _ => Level::Err,
    }
}

impl Ctx {
    /// Expand `format` and log it at `level`; xlog's result, 1.
    async fn xlog_at(&mut self, level: Level, format: &str) -> i32 {
        let line = self.pv_format(format).await;
        self.log(level, &line);
        1
    }
}

impl Host for Ctx {
    async fn xdbg(&mut self, lmsg: String) -> i32 {
        self.xlog_at(Level::Dbg, &lmsg).await
    }
    async fn xinfo(&mut self, lmsg: String) -> i32 {
        self.xlog_at(Level::Info, &lmsg).await
    }
    async fn xnotice(&mut self, lmsg: String) -> i32 {
        self.xlog_at(Level::Notice, &lmsg).await
    }
    async fn xwarn(&mut self, lmsg: String) -> i32 {
        self.xlog_at(Level::Warn, &lmsg).await
    }
    async fn xerr(&mut self, lmsg: String) -> i32 {
        self.xlog_at(Level::Err, &lmsg).await
    }
    async fn xalert(&mut self, lmsg: String) -> i32 {
        self.xlog_at(Level::Crit, &lmsg).await
    }
    async fn xcrit(&mut self, lmsg: String) -> i32 {
        self.xlog_at(Level::Crit, &lmsg).await
    }
    async fn xlog(&mut self, llevel: String, lmsg: String) -> i32 {
        self.xlog_at(level(&llevel), &lmsg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::testing::{INVITE, ctx, invite_with, message, ready};

    fn logged(c: &Ctx) -> Vec<(Level, String)> {
        c.events
            .iter()
            .filter_map(|e| match e {
                Event::Log { level, message } => Some((*level, message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn level_names() {
        assert_eq!(level("L_DBG"), Level::Dbg);
        assert_eq!(level("l_info"), Level::Info);
        assert_eq!(level("L_NOTICE"), Level::Notice);
        assert_eq!(level("L_WARN"), Level::Warn);
        assert_eq!(level("L_ERR"), Level::Err);
        assert_eq!(level("L_CRIT"), Level::Crit);
        assert_eq!(level("L_ALERT"), Level::Crit);
        assert_eq!(level("L_BUG"), Level::Crit);
        assert_eq!(level("info"), Level::Err);
        assert_eq!(level(""), Level::Err);
    }

    /// The brief's example line: message values, script variables, headers,
    /// AVPs, the enclosed form and the reply code, `<null>` for what has
    /// no value.
    #[test]
    fn formats_expand_with_the_pv_reader() {
        let mut c = ctx(INVITE);
        ready(crate::bindings::kemibox::ksr::pv::Host::sets(
            &mut c,
            "$var(x)".into(),
            "vx".into(),
        ));
        message(&mut c).tm.status = Some(486);
        assert_eq!(
            ready(
                c.xinfo(
                    "$rm from $si to $ru ($ua) $var(x) $hdr(Call-ID) $avp(y) $(ru) $T_reply_code\n"
                        .into()
                )
            ),
            1
        );
        assert_eq!(
            logged(&c),
            vec![(
                Level::Info,
                "INVITE from 192.0.2.7 to sip:bob@example.com (phone/1.0) vx \
                 call-1@192.0.2.7 <null> sip:bob@example.com 486"
                    .into()
            )]
        );
    }

    #[test]
    fn transformations_escapes_and_bad_specifiers() {
        let mut c = ctx(&invite_with(&[], &["X-Mixed: AbC"]));
        ready(
            c.xlog(
                "L_WARN".into(),
                "$(ru{uri.user}) $(ru{uri.host}{s.toupper}) $(hdr(X-Mixed){s.tolower}{s.len}) \
             $(fu{uri.port}) $(ru{s.nope}) $$5 $ $nope $(avp(a)[0]) $hdr(Via"
                    .into(),
            ),
        );
        ready(c.xdbg("$(cs{s.int})".into()));
        assert_eq!(
            logged(&c),
            vec![
                (
                    Level::Warn,
                    "bob EXAMPLE.COM 3 <null> <null> $5 $ <null> <null> <null>".into()
                ),
                (Level::Dbg, "1".into()),
            ]
        );
    }

    /// An expansion is cut at 64 KiB, whatever the format asks for.
    #[test]
    fn long_expansions_are_cut() {
        let mut c = ctx(INVITE);
        ready(c.xinfo("$ci".repeat(5000)));
        let lines = logged(&c);
        assert_eq!(lines[0].1.len(), crate::pv_format::MAX_OUTPUT);
        assert!(lines[0].1.starts_with("call-1@192.0.2.7call-1@"));
    }

    /// Without a message (the script's top level), message variables are
    /// `<null>`, script variables still read.
    #[test]
    fn outside_a_message() {
        let mut c = ctx(INVITE);
        c.begin(None);
        ready(c.xerr("ru=$ru var=$var(z)".into()));
        assert_eq!(logged(&c), vec![(Level::Err, "ru=<null> var=0".into())]);
    }
}
