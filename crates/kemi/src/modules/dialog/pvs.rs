//! `$dlg(...)`, `$dlg_var(name)` and `$dlg_ctx(...)` of the message's
//! dialog (a managed one), for pv.rs. Without a dialog they read `$null`.

use std::time::Instant;

use super::table::Dialog;
use crate::modules::pv::PvError;
use crate::{Ctx, PvValue};

fn int(n: impl TryInto<i32>) -> Option<PvValue> {
    n.try_into().ok().map(PvValue::Int)
}

fn text(s: &str) -> Option<PvValue> {
    Some(PvValue::Str(s.to_string()))
}

/// `$dlg(name)` of `d`.
fn dlg_attribute(d: &Dialog, name: &str) -> Result<Option<PvValue>, PvError> {
    Ok(match name {
        "h_id" => int(d.id.h_id),
        "h_entry" => int(d.id.h_entry),
        "ref" => int(1),
        "state" => int(d.state as i32),
        "callid" => text(&d.call_id),
        "from_uri" => text(&d.from_uri),
        "to_uri" => text(&d.to_uri),
        "from_tag" => text(&d.caller.tag),
        "to_tag" => text(&d.callee.tag),
        "from_cseq" => int(d.caller.cseq),
        "to_cseq" => int(d.callee.cseq),
        "from_contact" => text(&d.caller.contact),
        "to_contact" => text(&d.callee.contact),
        "from_rr" => text(&d.caller.route_set.join(",")),
        "to_rr" => text(&d.callee.route_set.join(",")),
        "from_bind_addr" => d.caller.socket.as_deref().and_then(text),
        "to_bind_addr" => d.callee.socket.as_deref().and_then(text),
        "dflags" => int(0),
        "sflags" => int(d.flags),
        "lifetime" => int(d.timeout),
        "start_ts" => int(d.start_ts),
        "toroute" | "toroute_name" => None,
        _ => return Err(PvError::Unknown),
    })
}

impl Ctx {
    /// The message's dialog, read.
    fn dlg_read<T>(&self, f: impl FnOnce(&Dialog) -> T) -> Option<T> {
        let id = self.dlg_current()?;
        self.state.dialog.table.with(id, f)
    }

    /// Read `$dlg(inner)`, `$dlg_var(inner)` or `$dlg_ctx(inner)`.
    pub(crate) fn dlg_pv_read(&self, class: &str, inner: &str) -> Result<Option<PvValue>, PvError> {
        match class {
            "dlg" => Ok(self
                .dlg_read(|d| dlg_attribute(d, inner))
                .transpose()?
                .flatten()),
            "dlg_var" => Ok(self
                .dlg_read(|d| d.vars.get(inner).map(|v| PvValue::Str(v.clone())))
                .flatten()),
            _ => {
                let from_tag = self
                    .message
                    .as_ref()
                    .and_then(|m| m.sip.from().and_then(|f| f.tag().map(str::to_string)));
                let now = Instant::now();
                let read = self.dlg_read(|d| match inner {
                    "set" => Ok(int(1)),
                    "on" => Ok(int(1)),
                    "flags" => Ok(int(d.flags)),
                    "timeout_bye" => Ok(int(i32::from(d.timeout_bye))),
                    "timeout" => Ok(int(d.remaining(now))),
                    "dir" => Ok(int(d.direction(from_tag.as_deref()))),
                    _ => Err(PvError::Unknown),
                });
                match (read, inner) {
                    (Some(r), _) => r,
                    (None, "set" | "on" | "flags" | "timeout_bye" | "timeout" | "dir") => {
                        Ok(int(0))
                    }
                    (None, _) => Err(PvError::Unknown),
                }
            }
        }
    }

    /// Write `$dlg_var(inner)` (`None` removes it) or `$dlg_ctx(inner)`
    /// (`flags`, `timeout`, `timeout_bye`); `$dlg(...)` is read-only.
    pub(crate) fn dlg_pv_write(
        &mut self,
        class: &str,
        inner: &str,
        value: Option<PvValue>,
    ) -> Result<(), PvError> {
        if class == "dlg" {
            return Err(PvError::ReadOnly);
        }
        let Some(id) = self.dlg_current() else {
            // No dialog: nothing to write to (as Kamailio without one).
            return Ok(());
        };
        let table = &self.state.dialog.table;
        // Its saved record follows whatever is written.
        self.state.dialog.touch(id);
        if class == "dlg_var" {
            table.update(id, |d| match value {
                Some(v) => d.vars.insert(inner.to_string(), v.as_text()),
                None => d.vars.remove(inner),
            });
            return Ok(());
        }
        let number = match &value {
            Some(PvValue::Int(i)) => *i,
            Some(PvValue::Str(s)) => s.trim().parse().unwrap_or(0),
            None => 0,
        };
        match inner {
            "flags" => {
                table.update(id, |d| d.flags = number as u32);
            }
            "timeout_bye" => {
                table.update(id, |d| d.timeout_bye = number != 0);
            }
            "timeout" => {
                table.set_timeout(id, u32::try_from(number).unwrap_or(0), Instant::now());
            }
            "set" | "on" | "dir" => return Err(PvError::ReadOnly),
            _ => return Err(PvError::Unknown),
        }
        Ok(())
    }
}
