//! Where a refused value is, told the same way for every error: the file,
//! line and column (from the value's toml span), the key's path, the
//! tenant entry it is in, the line itself, and the fix.
//!
//! ```text
//! proxy.toml: line 10: tenant a: limits: burst = 0 must be at least 1
//!   --> proxy.toml:10:9, key `tenant.limits.burst` of tenant a
//!    |
//! 10 | burst = 0
//!    |         ^
//!   fix: give at least 1, or remove it to burst to invocations_per_second
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where a value was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nowhere: a built-in default, which the checks always accept.
    Builtin,
    /// A `kemibox run` option, e.g. `--fuel`.
    Flag(&'static str),
    /// A key in the config file.
    Key(Key),
}

/// A key in the config file, with its value's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Byte range of the value in the file.
    pub span: Range<usize>,
    /// Dotted path as TOML names it: `limits.burst`, `tenant.relay_to[1]`.
    pub path: String,
    /// The id (as written) of the `[[tenant]]` entry it is in.
    pub tenant: Option<String>,
}

/// A refused value: where it was given, what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Origin,
    /// What is wrong, naming the key (e.g. `listen: unknown transport`).
    pub what: String,
    /// What to write instead.
    pub fix: String,
}

impl Problem {
    pub fn new(at: Origin, what: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem {
            at,
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// The error a user sees, for a file read from `path` with `text`.
    pub fn locate(self, path: &Path, text: &str) -> ConfigError {
        let place = match self.at {
            Origin::Key(key) => Place::File(Spot::new(path, text, key.span, key.path, key.tenant)),
            Origin::Flag(flag) => Place::Flag(flag),
            Origin::Builtin => Place::Builtin,
        };
        ConfigError {
            place,
            what: self.what,
            fix: self.fix,
        }
    }
}

/// A refused configuration, ready to print.
#[derive(Debug)]
pub struct ConfigError {
    place: Place,
    what: String,
    fix: String,
}

impl ConfigError {
    /// A value that did not parse (toml's own error), located by its span;
    /// `key` is the path found at that span, if any.
    pub fn parse(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim_end();
        // serde's messages end in ", expected ...": what to write instead.
        let (what, fix) = match message.split_once(", expected ") {
            Some((what, expected)) if what.starts_with("unknown field") => {
                let expected = expected.strip_prefix("one of ").unwrap_or(expected);
                (what.to_string(), format!("use one of {expected}"))
            }
            Some((what, expected)) => (what.to_string(), format!("give {}", plain(expected))),
            None => match message.strip_prefix("missing field ") {
                Some(field) => (message.to_string(), format!("add {field}")),
                None => (
                    message.to_string(),
                    "see docs/config.md for what this key takes".to_string(),
                ),
            },
        };
        let place = match error.span() {
            Some(span) => {
                let key = key_at(text, span.start).unwrap_or_default();
                Place::File(Spot::new(path, text, span, key, None))
            }
            None => Place::Whole(path.to_path_buf()),
        };
        ConfigError { place, what, fix }
    }
}

impl From<Problem> for ConfigError {
    /// A problem with no file to point into: an option's.
    fn from(problem: Problem) -> ConfigError {
        let place = match problem.at {
            Origin::Flag(flag) => Place::Flag(flag),
            Origin::Key(_) | Origin::Builtin => Place::Builtin,
        };
        ConfigError {
            place,
            what: problem.what,
            fix: problem.fix,
        }
    }
}

/// serde's name of an expected type, as a user would say it.
fn plain(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "a boolean" | "bool" => "true or false",
        other => other,
    }
}

#[derive(Debug)]
enum Place {
    File(Spot),
    /// The file as a whole (toml gave no span).
    Whole(PathBuf),
    Flag(&'static str),
    Builtin,
}

/// A position in the file, computed from a span.
#[derive(Debug)]
struct Spot {
    file: PathBuf,
    line: usize,
    /// In characters, from 1.
    column: usize,
    key: String,
    tenant: Option<String>,
    /// The line's text and how many characters of it the span covers.
    source: String,
    width: usize,
}

impl Spot {
    fn new(
        path: &Path,
        text: &str,
        span: Range<usize>,
        key: String,
        tenant: Option<String>,
    ) -> Spot {
        let start = floor_char_boundary(text, span.start);
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let source = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let column = text[line_start..start].chars().count() + 1;
        let end = floor_char_boundary(text, span.end.clamp(start, line_end));
        Spot {
            file: path.to_path_buf(),
            line: text[..start].matches('\n').count() + 1,
            column,
            key,
            tenant,
            width: text[start..end].chars().count().max(1),
            source,
        }
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, fix) = (&self.what, &self.fix);
        match &self.place {
            Place::File(s) => {
                let file = s.file.display();
                writeln!(f, "{file}: line {}: {what}", s.line)?;
                write!(f, "  --> {file}:{}:{}", s.line, s.column)?;
                if !s.key.is_empty() {
                    write!(f, ", key `{}`", s.key)?;
                }
                if let Some(tenant) = &s.tenant {
                    write!(f, " of tenant {tenant}")?;
                }
                let margin = " ".repeat(s.line.to_string().len());
                writeln!(f)?;
                writeln!(f, "{margin} |")?;
                writeln!(f, "{} | {}", s.line, s.source)?;
                writeln!(
                    f,
                    "{margin} | {}{}",
                    " ".repeat(s.column - 1),
                    "^".repeat(s.width)
                )?;
                write!(f, "  fix: {fix}")
            }
            Place::Whole(file) => write!(f, "{}: {what}\n  fix: {fix}", file.display()),
            Place::Flag(flag) => write!(f, "{flag}: {what}\n  fix: {fix}"),
            Place::Builtin => write!(f, "{what}\n  fix: {fix}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The dotted path of the key whose name or value spans `offset`
/// (`limits.fule`, `tenant.listen[1]`), found in the file's own spans;
/// `None` when the text does not parse or no key is there.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut path = String::new();
    walk_table(root.get_ref(), offset, &mut path);
    (!path.is_empty()).then_some(path)
}

fn walk_table(table: &toml::de::DeTable<'_>, offset: usize, path: &mut String) {
    for (key, value) in table {
        let in_key = key.span().contains(&offset);
        // A table's span is its header only, and an array of tables has
        // none covering its entries: look into both whatever their spans.
        let into = value.span().contains(&offset)
            || value.get_ref().is_array()
            || value.get_ref().is_table();
        if !in_key && !into {
            continue;
        }
        let before = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if in_key || walk_value(value, offset, path) {
            return;
        }
        path.truncate(before);
    }
}

/// Whether `offset` is in `value`, extending `path` to where.
fn walk_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    offset: usize,
    path: &mut String,
) -> bool {
    match value.get_ref() {
        toml::de::DeValue::Table(table) => {
            let before = path.len();
            walk_table(table, offset, path);
            path.len() > before || value.span().contains(&offset)
        }
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let before = path.len();
                let tables = item.get_ref().is_table();
                if !tables {
                    path.push_str(&format!("[{i}]"));
                }
                if walk_value(item, offset, path) {
                    return true;
                }
                path.truncate(before);
            }
            value.span().contains(&offset)
        }
        _ => value.span().contains(&offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_names_the_key_path_it_is_in() {
        let text = "listen = [\"a\", \"b\"]\n[limits]\nfule = 3\n[[tenant]]\nid = \"x\"\n[[tenant]]\nid = \"y\"\nbogus = 1\n[tenant.limits]\nfuel = 1\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("\"b\"").as_deref(), Some("listen[1]"));
        assert_eq!(at("fule").as_deref(), Some("limits.fule"));
        assert_eq!(at("bogus").as_deref(), Some("tenant.bogus"));
        assert_eq!(at("fuel").as_deref(), Some("tenant.limits.fuel"));
        assert_eq!(key_at("a = [", 0), None);
    }

    #[test]
    fn an_error_names_file_line_column_key_tenant_and_fix() {
        let text = "x = 1\n[limits]\nburst = 0\n";
        let problem = Problem::new(
            Origin::Key(Key {
                span: 23..24,
                path: "tenant.limits.burst".into(),
                tenant: Some("a".into()),
            }),
            "limits: burst = 0 must be at least 1",
            "give at least 1",
        );
        let shown = problem.locate(Path::new("p.toml"), text).to_string();
        assert_eq!(
            shown,
            "p.toml: line 3: limits: burst = 0 must be at least 1\n  --> p.toml:3:9, key `tenant.limits.burst` of tenant a\n  |\n3 | burst = 0\n  |         ^\n  fix: give at least 1"
        );
    }
}
