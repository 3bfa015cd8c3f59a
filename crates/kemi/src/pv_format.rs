//! Format strings with pseudo-variables, as Kamailio's xlog and other
//! modules take them: `"$rm from $si to $ru ($ua) $hdr(Call-ID)"`.
//!
//! Parsing is separate from evaluation (the message's values come from the
//! one pseudo-variable reader behind `KSR.pv.get`, see
//! `modules/pv.rs`), so the rules live in one place:
//!
//! * `$name` and `$name(inner)` (inner parentheses may nest);
//! * `$(name)`, `$(name(inner))`, with transformations after the name:
//!   `$(ru{uri.user})`, `$(hdr(X){s.tolower}{s.len})`;
//! * `$$` is a literal `$`; a `$` not followed by a name or `(` stays as
//!   it is (Kamailio refuses such a format; here the text is kept);
//! * a malformed specifier (no closing parenthesis, an index such as
//!   `$(avp(x)[1])`) prints as `<null>` like an unknown or `$null` value.

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// A pseudo-variable: its name as `KSR.pv.get` takes it (`$hdr(X)`)
    /// and the transformations to apply, innermost first (`s.len`).
    Pv {
        name: String,
        transformations: Vec<&'a str>,
    },
    /// A specifier that cannot be read: printed as `<null>`.
    Malformed(&'a str),
}

/// Longest expansion, in bytes: the rest is cut (as Kamailio's xlog cuts
/// at its buffer size), so a format repeating `$mb` cannot make the host
/// build a huge string.
pub(crate) const MAX_OUTPUT: usize = 65536;

/// What Kamailio prints for a `$null` or unreadable value.
pub(crate) const NULL_TEXT: &str = "<null>";

fn is_class_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Index just past the `close` matching the `open` at `text[0]`, counting
/// nested pairs; `None` when unbalanced.
fn matching(text: &str, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate() {
        if b == open {
            depth += 1;
        } else if b == close {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Parse `$(...)`'s inside: `name` or `name(inner)`, then `{tr}`s.
fn parse_enclosed(inner: &str) -> Option<Piece<'_>> {
    let class_end = inner
        .bytes()
        .position(|b| !is_class_byte(b))
        .unwrap_or(inner.len());
    if class_end == 0 {
        return None;
    }
    let mut rest = &inner[class_end..];
    let mut name = format!("${}", &inner[..class_end]);
    if rest.starts_with('(') {
        let end = matching(rest, b'(', b')')?;
        name.push_str(&rest[..end]);
        rest = &rest[end..];
    }
    let mut transformations = Vec::new();
    while !rest.is_empty() {
        if !rest.starts_with('{') {
            return None;
        }
        let end = matching(rest, b'{', b'}')?;
        transformations.push(rest[1..end - 1].trim());
        rest = &rest[end..];
    }
    Some(Piece::Pv {
        name,
        transformations,
    })
}

/// Split `format` into text and pseudo-variables (see the module docs).
pub(crate) fn parse(format: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = format;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            pieces.push(Piece::Text(&rest[..at]));
        }
        let spec = &rest[at..];
        let after = &spec[1..];
        let (piece, used) = if after.starts_with('$') {
            (Piece::Text("$"), 2)
        } else if after.starts_with('(') {
            match matching(after, b'(', b')') {
                Some(end) => (
                    parse_enclosed(&after[1..end - 1]).unwrap_or(Piece::Malformed(&spec[..=end])),
                    end + 1,
                ),
                None => (Piece::Malformed(spec), spec.len()),
            }
        } else {
            let class_end = after
                .bytes()
                .position(|b| !is_class_byte(b))
                .unwrap_or(after.len());
            if class_end == 0 {
                (Piece::Text("$"), 1)
            } else if after[class_end..].starts_with('(') {
                match matching(&after[class_end..], b'(', b')') {
                    Some(end) => (
                        Piece::Pv {
                            name: spec[..=class_end + end].to_string(),
                            transformations: Vec::new(),
                        },
                        class_end + end + 1,
                    ),
                    None => (Piece::Malformed(spec), spec.len()),
                }
            } else {
                (
                    Piece::Pv {
                        name: spec[..=class_end].to_string(),
                        transformations: Vec::new(),
                    },
                    class_end + 1,
                )
            }
        };
        pieces.push(piece);
        rest = &spec[used..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, transformations: &[&'static str]) -> Piece<'static> {
        Piece::Pv {
            name: name.into(),
            transformations: transformations.to_vec(),
        }
    }

    #[test]
    fn names_arguments_and_text() {
        assert_eq!(
            parse("$rm from $si:$sp ($hdr(Call-ID))"),
            vec![
                pv("$rm", &[]),
                Piece::Text(" from "),
                pv("$si", &[]),
                Piece::Text(":"),
                pv("$sp", &[]),
                Piece::Text(" ("),
                pv("$hdr(Call-ID)", &[]),
                Piece::Text(")"),
            ]
        );
        assert_eq!(parse("no variables"), vec![Piece::Text("no variables")]);
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse("$T_reply_code"), vec![pv("$T_reply_code", &[])]);
    }

    #[test]
    fn enclosed_forms_and_transformations() {
        assert_eq!(parse("$(ru)"), vec![pv("$ru", &[])]);
        assert_eq!(
            parse("<$(hdr(X-A){s.tolower}{ s.len })>"),
            vec![
                Piece::Text("<"),
                pv("$hdr(X-A)", &["s.tolower", "s.len"]),
                Piece::Text(">"),
            ]
        );
        assert_eq!(
            parse("$(avp(x)[1])"),
            vec![Piece::Malformed("$(avp(x)[1])")]
        );
        assert_eq!(parse("$()"), vec![Piece::Malformed("$()")]);
    }

    #[test]
    fn dollars_and_malformed_specifiers() {
        assert_eq!(
            parse("cost $$5 $ ok"),
            vec![
                Piece::Text("cost "),
                Piece::Text("$"),
                Piece::Text("5 "),
                Piece::Text("$"),
                Piece::Text(" ok"),
            ]
        );
        assert_eq!(parse("end $"), vec![Piece::Text("end "), Piece::Text("$")]);
        assert_eq!(
            parse("x $hdr(Via"),
            vec![Piece::Text("x "), Piece::Malformed("$hdr(Via")]
        );
        assert_eq!(parse("$(ru"), vec![Piece::Malformed("$(ru")]);
        assert_eq!(parse("$(ru{s.len)"), vec![Piece::Malformed("$(ru{s.len)")]);
        // Unbalanced closers never panic.
        assert_eq!(parse("$(ru})"), vec![Piece::Malformed("$(ru})")]);
    }
}
