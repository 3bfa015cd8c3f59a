//! Kamailio's dispatcher.list format: one destination a line,
//! `setid destination [flags [priority [attrs [description]]]]`, `#`
//! comments and blank lines ignored. The attributes are
//! `name=value;name=value`, some of them meaning something to the module
//! (`duid`, `maxload`, `weight`, `rweight`, `socket`, `ping_from`,
//! `obproxy`, `latency`); the others are carried for the script.

use std::fmt;

use kemibox_sip::Uri;

/// Destination flags of the list file (and of a destination's state):
/// Kamailio's values.
pub mod flags {
    /// Not selected; probed when the probing mode says so.
    pub const INACTIVE: u32 = 1;
    /// Failed lately; still selected, inactive after enough failures.
    pub const TRYING: u32 = 2;
    /// Switched off by the administrator: never selected nor probed.
    pub const DISABLED: u32 = 4;
    /// Probed with OPTIONS.
    pub const PROBING: u32 = 8;
    /// No DNS lookup of the host (so `ds_is_from_list` cannot match it).
    pub const NODNSARES: u32 = 16;
    /// The bits that make up a destination's state.
    pub const STATES: u32 = INACTIVE | TRYING | DISABLED | PROBING;
}

/// A destination's attributes: the text as given and what the module
/// reads from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// The attributes as written (`duid=gw1;weight=50`).
    pub body: String,
    /// Unique id for call load dispatching (algorithm 10).
    pub duid: Option<String>,
    /// Most calls at once for algorithm 10 (0: no limit).
    pub maxload: u32,
    /// Percent of calls for algorithm 9 (1..100; anything else is 0).
    pub weight: u32,
    /// Relative weight for algorithm 11 (1..100; anything else is 0).
    pub rweight: u32,
    /// The socket to send from, `proto:ip:port`.
    pub socket: Option<String>,
    /// From URI of this destination's probes.
    pub ping_from: Option<String>,
    /// Where this destination's probes go first.
    pub obproxy: Option<String>,
    /// Initial latency estimate in ms (algorithm 13).
    pub latency: u32,
}

impl Attrs {
    /// Read `body`; values of known attributes that are not numbers count
    /// as 0, as in Kamailio.
    pub fn parse(body: &str) -> Attrs {
        let mut a = Attrs {
            body: body.to_string(),
            ..Attrs::default()
        };
        for pair in body.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.trim();
            let number = || value.parse::<u32>().unwrap_or(0);
            let percent = || {
                Some(number())
                    .filter(|w| (1..=100).contains(w))
                    .unwrap_or(0)
            };
            let text = || Some(value.to_string()).filter(|v| !v.is_empty());
            match name.trim() {
                "duid" => a.duid = text(),
                "maxload" => a.maxload = number(),
                "weight" => a.weight = percent(),
                "rweight" => a.rweight = percent(),
                "socket" => a.socket = text(),
                "ping_from" => a.ping_from = text(),
                "obproxy" => a.obproxy = text(),
                "latency" => a.latency = number(),
                _ => {}
            }
        }
        a
    }
}

/// One line of the list (or one row of the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestSpec {
    pub setid: i32,
    /// The destination's SIP URI, as written.
    pub uri: String,
    pub flags: u32,
    pub priority: i32,
    pub attrs: Attrs,
    pub description: String,
}

/// A line the list cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    /// 1-based.
    pub line: usize,
    pub why: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

impl std::error::Error for ListError {}

impl DestSpec {
    /// A destination from its fields, checked: the URI must be a SIP URI
    /// with a host, the flags Kamailio's.
    pub fn new(
        setid: i32,
        uri: &str,
        flags: u32,
        priority: i32,
        attrs: &str,
        description: &str,
    ) -> Result<DestSpec, String> {
        let parsed = Uri::parse(uri).map_err(|e| format!("{uri:?} is not a SIP URI: {e}"))?;
        if !parsed.scheme.eq_ignore_ascii_case("sip") && !parsed.scheme.eq_ignore_ascii_case("sips")
            || parsed.host.is_empty()
        {
            return Err(format!("{uri:?} is not a sip: or sips: URI with a host"));
        }
        if flags > 31 {
            return Err(format!(
                "flags {flags}: only 1 (inactive), 2 (trying), 4 (disabled), 8 (probing) and 16 (no DNS) add up"
            ));
        }
        Ok(DestSpec {
            setid,
            uri: uri.to_string(),
            flags,
            priority,
            attrs: Attrs::parse(attrs),
            description: description.to_string(),
        })
    }
}

/// Every destination of a list file's text, in file order.
pub fn parse(text: &str) -> Result<Vec<DestSpec>, ListError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why: String| ListError { line: n + 1, why };
        let mut fields = line.split_whitespace();
        let setid = fields.next().unwrap_or_default();
        let setid: i32 = setid
            .parse()
            .map_err(|_| err(format!("set id {setid:?} is not an integer")))?;
        let uri = fields
            .next()
            .ok_or_else(|| err("no destination URI after the set id".into()))?;
        let int = |name: &str, v: Option<&str>| -> Result<i64, ListError> {
            match v {
                None => Ok(0),
                Some(v) => v
                    .parse()
                    .map_err(|_| err(format!("{name} {v:?} is not an integer"))),
            }
        };
        let flags = int("flags", fields.next())?;
        let priority = int("priority", fields.next())?;
        let attrs = fields.next().unwrap_or_default();
        let description = fields.collect::<Vec<_>>().join(" ");
        let flags = u32::try_from(flags).map_err(|_| err(format!("flags {flags} is negative")))?;
        let priority = i32::try_from(priority)
            .map_err(|_| err(format!("priority {priority} is too large")))?;
        out.push(DestSpec::new(setid, uri, flags, priority, attrs, &description).map_err(err)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_optional_fields() {
        let text = "# gateways\n\n\
            1 sip:127.0.0.1:7070 0 0 duid=xyz;maxload=20\n\
            1 sip:127.0.0.1:7072 8 5\n  1 sip:127.0.0.1:7074\n\
            2 sip:gw.example.com;transport=tcp 0 10 weight=30;my=x the main gateway\n";
        let list = parse(text).unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list[0].attrs.duid.as_deref(), Some("xyz"));
        assert_eq!(list[0].attrs.maxload, 20);
        assert_eq!((list[1].flags, list[1].priority), (flags::PROBING, 5));
        assert_eq!(
            (list[2].flags, list[2].priority, list[2].attrs.body.as_str()),
            (0, 0, "")
        );
        assert_eq!(list[3].setid, 2);
        assert_eq!(list[3].attrs.weight, 30);
        assert_eq!(list[3].attrs.body, "weight=30;my=x");
        assert_eq!(list[3].description, "the main gateway");
    }

    #[test]
    fn attributes_known_and_out_of_range() {
        let a = Attrs::parse(
            "weight=150;rweight=0;socket=udp:10.0.0.1:5060;ping_from=sip:p@x;obproxy=sip:o;latency=20",
        );
        assert_eq!((a.weight, a.rweight, a.latency), (0, 0, 20));
        assert_eq!(a.socket.as_deref(), Some("udp:10.0.0.1:5060"));
        assert_eq!(a.ping_from.as_deref(), Some("sip:p@x"));
        assert_eq!(a.obproxy.as_deref(), Some("sip:o"));
        assert_eq!(Attrs::parse("weight=abc").weight, 0);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse("1 sip:a.example\nx sip:b.example\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.why.contains("set id"), "{e}");
        assert!(parse("1\n").unwrap_err().why.contains("no destination"));
        assert!(parse("1 tel:+123\n").unwrap_err().why.contains("sip:"));
        assert!(
            parse("1 sip:a.example zero\n")
                .unwrap_err()
                .why
                .contains("flags")
        );
        assert!(
            parse("1 sip:a.example 64\n")
                .unwrap_err()
                .why
                .contains("flags")
        );
        assert!(
            parse("1 sip:a.example -1\n")
                .unwrap_err()
                .why
                .contains("negative")
        );
    }
}
