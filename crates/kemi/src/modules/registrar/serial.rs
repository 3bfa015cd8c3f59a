//! Serial forking over the contacts a lookup produced, grouped by q:
//! `KSR.tm.t_load_contacts` and `KSR.tm.t_next_contacts` (Kamailio's tm
//! functions of those names). They live beside the registrar because they
//! work on what `lookup` leaves: the R-URI with its q, and the appended
//! branches.
//!
//! The loaded contacts are kept in the message's AVPs, one value per
//! contact under [`CONTACTS_AVP`], best first: the proxy copies AVPs into
//! the transaction, so the failure route still finds the contacts not
//! tried yet.

use std::cmp::Reverse;

use super::{parse_q, q_text};
use crate::{AppendedBranch, Ctx, Message, PvValue};

/// AVP holding the contacts `t_load_contacts` loaded and
/// `t_next_contacts` has not taken yet (Kamailio's customary
/// `contacts_avp` name).
const CONTACTS_AVP: &str = "tm_contacts";

/// AVP holding the q-value of the R-URI (`0.5`), set by `lookup` from the
/// chosen binding (absent: no q): `t_load_contacts` groups the R-URI with
/// it. A script may set it too, as it would Kamailio's R-URI q.
const RURI_Q_AVP: &str = "ruri_q";

/// Record (or, for `None`, clear) the q-value of the R-URI of `m`.
pub(super) fn set_ruri_q(m: &mut Message, q: Option<u16>) {
    match q {
        Some(q) => {
            m.avps
                .insert(RURI_Q_AVP.to_string(), vec![PvValue::Str(q_text(q))]);
        }
        None => {
            m.avps.remove(RURI_Q_AVP);
        }
    }
}

/// One loaded contact: a destination set entry with its q.
#[derive(Debug, Clone, PartialEq)]
struct Contact {
    uri: String,
    dst_uri: Option<String>,
    path: Vec<String>,
    /// Times 1000; `None` ranks as 0.
    q: Option<u16>,
}

impl Contact {
    fn rank(&self) -> u16 {
        self.q.unwrap_or(0)
    }

    /// One AVP value: lines of q (empty for none), URI, destination
    /// (empty for none) and the Path entries. None of these can hold a
    /// line feed (URIs and unfolded header values).
    fn encode(&self) -> PvValue {
        let mut lines = vec![
            self.q.map(q_text).unwrap_or_default(),
            self.uri.clone(),
            self.dst_uri.clone().unwrap_or_default(),
        ];
        lines.extend(self.path.iter().cloned());
        PvValue::Str(lines.join("\n"))
    }

    /// The contact in an AVP value; `None` for anything `encode` did not
    /// write (a script may have pushed its own values).
    fn decode(value: &PvValue) -> Option<Contact> {
        let PvValue::Str(text) = value else {
            return None;
        };
        let mut lines = text.split('\n');
        let q = match lines.next()? {
            "" => None,
            q => Some(parse_q(q)?),
        };
        let uri = lines.next().filter(|u| !u.is_empty())?.to_string();
        let dst_uri = lines.next().filter(|d| !d.is_empty()).map(str::to_string);
        Some(Contact {
            uri,
            dst_uri,
            path: lines.map(str::to_string).collect(),
            q,
        })
    }
}

impl Ctx {
    /// `t_load_contacts`: the R-URI and the appended branches become the
    /// loaded contacts, best q first (equal q in their order), and the
    /// branches are cleared. 1; -1 without a request, or when the R-URI is
    /// the only destination (nothing is loaded then).
    pub(crate) fn load_contacts(&mut self) -> i32 {
        let Some(m) = self.message.as_mut().filter(|m| m.sip.is_request()) else {
            return -1;
        };
        let Some(ruri) = m.ruri() else {
            return -1;
        };
        m.avps.remove(CONTACTS_AVP);
        if m.branches.is_empty() {
            return -1;
        }
        let ruri_q = m
            .avps
            .get(RURI_Q_AVP)
            .and_then(|v| v.first())
            .and_then(|v| parse_q(&v.as_text()));
        let mut contacts = vec![Contact {
            uri: ruri,
            dst_uri: m.dst_uri.clone(),
            path: m.path.clone(),
            q: ruri_q,
        }];
        contacts.extend(m.branches.drain(..).map(|b| Contact {
            q: b.q.as_deref().and_then(parse_q),
            uri: b.uri,
            dst_uri: b.dst_uri,
            path: b.path,
        }));
        contacts.sort_by_key(|c| Reverse(c.rank()));
        m.avps.insert(
            CONTACTS_AVP.to_string(),
            contacts.iter().map(Contact::encode).collect(),
        );
        1
    }

    /// `t_next_contacts`: the loaded contacts with the highest q are taken
    /// out: the first becomes the R-URI (with its `$du` and Path), the
    /// others replace the appended branches. 1; -1 when none are left.
    pub(crate) fn next_contacts(&mut self) -> i32 {
        const FUNCTION: &str = "KSR.tm.t_next_contacts";
        let Some(m) = self.message.as_mut().filter(|m| m.sip.is_request()) else {
            return -1;
        };
        let mut contacts: Vec<Contact> = m
            .avps
            .remove(CONTACTS_AVP)
            .unwrap_or_default()
            .iter()
            .filter_map(Contact::decode)
            .collect();
        contacts.sort_by_key(|c| Reverse(c.rank()));
        let Some(rank) = contacts.first().map(Contact::rank) else {
            return -1;
        };
        let split = contacts
            .iter()
            .position(|c| c.rank() != rank)
            .unwrap_or(contacts.len());
        let rest = contacts.split_off(split);
        if !rest.is_empty() {
            m.avps.insert(
                CONTACTS_AVP.to_string(),
                rest.iter().map(Contact::encode).collect(),
            );
        }
        m.branches.clear();
        let mut group = contacts.into_iter();
        let Some(first) = group.next() else {
            return -1;
        };
        if !self.set_ruri(FUNCTION, first.uri) {
            return -1;
        }
        if self
            .message
            .as_ref()
            .is_some_and(|m| m.dst_uri != first.dst_uri)
        {
            self.set_dst_uri(FUNCTION, first.dst_uri);
        }
        if let Some(m) = self.message.as_mut() {
            m.path = first.path;
            set_ruri_q(m, first.q);
        }
        for c in group {
            self.append(AppendedBranch {
                q: c.q.map(q_text),
                uri: c.uri,
                dst_uri: c.dst_uri,
                path: c.path,
            });
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_survive_their_avp_form() {
        let c = Contact {
            uri: "sip:a@192.0.2.1".into(),
            dst_uri: Some("sip:198.51.100.1:5060".into()),
            path: vec!["<sip:p1.example.com;lr>".into(), "<sip:p2;lr>".into()],
            q: Some(500),
        };
        assert_eq!(Contact::decode(&c.encode()), Some(c));
        let bare = Contact {
            uri: "sip:b@h".into(),
            dst_uri: None,
            path: vec![],
            q: None,
        };
        assert_eq!(Contact::decode(&bare.encode()), Some(bare));
        assert_eq!(Contact::decode(&PvValue::Int(3)), None);
        assert_eq!(Contact::decode(&PvValue::Str("junk".into())), None);
        assert_eq!(Contact::decode(&PvValue::Str("7\nsip:a@h".into())), None);
    }
}
