//! A destination's state as Kamailio keeps it: the flag bits (inactive,
//! trying, disabled, probing) and one counter, changed by probe results,
//! `ds_mark_dst` and `dispatcher.set_state`. Pure: the probe driver and
//! the functions feed it outcomes.

use super::list::flags::{DISABLED, INACTIVE, PROBING, STATES, TRYING};

/// What is probed and how a probe's result changes the state
/// (`ds_probing_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProbingMode {
    /// 0: only destinations flagged probing; a probe clears the flag.
    #[default]
    Flagged,
    /// 1: every destination (but disabled ones), all the time.
    All,
    /// 2: also inactive destinations.
    Inactive,
    /// 3: destinations flagged probing, keeping the flag.
    OnlyFlagged,
}

impl ProbingMode {
    pub fn from_int(mode: i64) -> Option<ProbingMode> {
        Some(match mode {
            0 => ProbingMode::Flagged,
            1 => ProbingMode::All,
            2 => ProbingMode::Inactive,
            3 => ProbingMode::OnlyFlagged,
            _ => return None,
        })
    }
}

/// The thresholds of the state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures (trying) before a destination is inactive
    /// (`ds_probing_threshold`, default 1).
    pub probing: u32,
    /// Successes before an inactive destination is active again
    /// (`ds_inactive_threshold`, default 1).
    pub inactive: u32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            probing: 1,
            inactive: 1,
        }
    }
}

/// A destination's state bits and failure/success counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub flags: u32,
    /// Consecutive failures while trying, or successes while inactive.
    pub count: u32,
}

impl Health {
    /// The state a list file's flags give.
    pub fn from_flags(flags: u32) -> Health {
        Health {
            flags: flags & STATES,
            count: 0,
        }
    }

    /// Not selectable: inactive or disabled (trying still is).
    pub fn skipped(&self) -> bool {
        self.flags & (INACTIVE | DISABLED) != 0
    }

    /// Kamailio's two letters: A(ctive), I(nactive), T(rying) or
    /// D(isabled), then P(robing) or X.
    pub fn letters(&self) -> String {
        let state = if self.flags & INACTIVE != 0 {
            'I'
        } else if self.flags & DISABLED != 0 {
            'D'
        } else if self.flags & TRYING != 0 {
            'T'
        } else {
            'A'
        };
        let probing = if self.flags & PROBING != 0 { 'P' } else { 'X' };
        format!("{state}{probing}")
    }

    /// Move to `state` (flag bits) as Kamailio's ds_update_state does: a
    /// trying report while inactive keeps it inactive; trying counts
    /// failures up to `probing` then goes inactive; a success while
    /// inactive counts up to `inactive` before it is active again.
    pub fn update(&mut self, state: u32, t: Thresholds) {
        let old = self.flags;
        let reported = state & STATES;
        let mut state = reported;
        self.flags &= !STATES;
        if state & TRYING != 0 && old & INACTIVE != 0 {
            // It has to become active before it can be trying again.
            state = (state & !TRYING) | INACTIVE;
        }
        if state & DISABLED != 0 {
            self.flags |= DISABLED;
        } else {
            self.flags |= state;
        }
        if state & TRYING != 0 {
            self.count += 1;
            if self.count >= t.probing {
                self.flags = (self.flags & !TRYING) | INACTIVE;
                self.count = 0;
            }
        } else if reported & TRYING == 0 && old & INACTIVE != 0 {
            // Inactive and now answering: active after enough successes.
            self.count += 1;
            if self.count < t.inactive {
                self.flags |= INACTIVE;
            } else {
                self.count = 0;
            }
        } else if reported & TRYING == 0 {
            self.count = 0;
        }
    }
}

/// Whether the probe timer probes a destination in state `flags`.
pub fn probed(flags: u32, mode: ProbingMode) -> bool {
    if flags & DISABLED != 0 {
        return false;
    }
    mode == ProbingMode::All
        || flags & PROBING != 0
        || (mode == ProbingMode::Inactive && flags & INACTIVE != 0)
}

/// The state a probe's result reports (for [`Health::update`]), or `None`
/// when it changes nothing (mode 3 and the probing flag cleared
/// meanwhile). `accepted`: a 2xx or a code of `ds_ping_reply_codes`.
pub fn probe_report(accepted: bool, flags_now: u32, mode: ProbingMode) -> Option<u32> {
    if mode == ProbingMode::OnlyFlagged && flags_now & PROBING == 0 {
        return None;
    }
    Some(if accepted {
        match mode {
            ProbingMode::All | ProbingMode::OnlyFlagged => PROBING,
            ProbingMode::Flagged | ProbingMode::Inactive => 0,
        }
    } else {
        match mode {
            ProbingMode::Flagged => TRYING,
            _ => TRYING | PROBING,
        }
    })
}

/// `ds_ping_reply_codes`: the replies (beyond 2xx) that count as an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyCodes {
    classes: Vec<u16>,
    codes: Vec<u16>,
}

impl ReplyCodes {
    /// `class=2;code=404;...`; an error says which part is wrong.
    pub fn parse(text: &str) -> Result<ReplyCodes, String> {
        let mut r = ReplyCodes::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("{part:?} is not class=N (1-6) or code=NNN (100-699)");
            let (name, value) = part.split_once('=').ok_or_else(bad)?;
            let value: u16 = value.trim().parse().map_err(|_| bad())?;
            match name.trim() {
                "class" if (1..=6).contains(&value) => r.classes.push(value),
                "code" if (100..700).contains(&value) => r.codes.push(value),
                _ => return Err(bad()),
            }
        }
        Ok(r)
    }

    /// A reply `status` to a probe means the destination answers.
    pub fn accepts(&self, status: u16) -> bool {
        (200..300).contains(&status)
            || self.codes.contains(&status)
            || self.classes.contains(&(status / 100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Thresholds = Thresholds {
        probing: 1,
        inactive: 1,
    };

    #[test]
    fn active_to_inactive_after_threshold_failures_and_back() {
        let t = Thresholds {
            probing: 3,
            inactive: 2,
        };
        let mode = ProbingMode::All;
        let mut h = Health::from_flags(PROBING);
        assert_eq!(h.letters(), "AP");
        let fail = probe_report(false, h.flags, mode).unwrap();
        h.update(fail, t);
        assert_eq!((h.letters(), h.skipped()), ("TP".to_string(), false));
        h.update(fail, t);
        assert_eq!(h.letters(), "TP");
        h.update(fail, t);
        assert_eq!((h.letters(), h.skipped()), ("IP".to_string(), true));
        // More failures keep it inactive.
        h.update(fail, t);
        assert_eq!(h.letters(), "IP");
        let ok = probe_report(true, h.flags, mode).unwrap();
        h.update(ok, t);
        assert_eq!(h.letters(), "IP", "one success of two");
        h.update(ok, t);
        assert_eq!((h.letters(), h.skipped()), ("AP".to_string(), false));
    }

    #[test]
    fn a_success_while_trying_resets_the_failures() {
        let t = Thresholds {
            probing: 2,
            inactive: 1,
        };
        let mut h = Health::default();
        h.update(TRYING, t);
        h.update(0, t);
        assert_eq!(h.letters(), "AX");
        h.update(TRYING, t);
        assert_eq!(h.letters(), "TX", "counting from zero again");
        h.update(TRYING, t);
        assert_eq!(h.letters(), "IX");
    }

    #[test]
    fn marks_set_states_directly() {
        let mut h = Health::default();
        h.update(INACTIVE | PROBING, T1);
        assert_eq!(h.letters(), "IP");
        h.update(DISABLED | PROBING, T1);
        assert_eq!((h.letters(), h.skipped()), ("DX".to_string(), true));
        h.update(0, T1);
        assert_eq!(h.letters(), "AX");
    }

    #[test]
    fn which_destinations_are_probed() {
        use ProbingMode::*;
        assert!(probed(0, All));
        assert!(!probed(DISABLED, All));
        assert!(!probed(0, Flagged));
        assert!(probed(PROBING, Flagged));
        assert!(probed(INACTIVE, Inactive));
        assert!(!probed(INACTIVE, Flagged));
        assert!(probed(PROBING | INACTIVE, OnlyFlagged));
    }

    #[test]
    fn mode_0_probes_once_mode_3_keeps_the_flag() {
        // Mode 0: an answered probe clears the probing flag.
        let mut h = Health::from_flags(PROBING);
        h.update(
            probe_report(true, h.flags, ProbingMode::Flagged).unwrap(),
            T1,
        );
        assert_eq!(h.letters(), "AX");
        // Mode 3 keeps it, and ignores a destination no longer flagged.
        let mut h = Health::from_flags(PROBING);
        h.update(
            probe_report(true, h.flags, ProbingMode::OnlyFlagged).unwrap(),
            T1,
        );
        assert_eq!(h.letters(), "AP");
        assert_eq!(probe_report(false, 0, ProbingMode::OnlyFlagged), None);
    }

    #[test]
    fn reply_codes() {
        let r = ReplyCodes::parse("class=3;code=404").unwrap();
        assert!(r.accepts(200) && r.accepts(299) && r.accepts(302) && r.accepts(404));
        assert!(!r.accepts(408) && !r.accepts(503));
        assert!(!ReplyCodes::default().accepts(404));
        assert!(ReplyCodes::parse("class=9").is_err());
        assert!(ReplyCodes::parse("code=42").is_err());
        assert!(ReplyCodes::parse("weight=2").is_err());
    }
}
