//! Pseudo-variable names as scripts write them: `$ru`, `$var(x)`,
//! `$hdr(Name)`, `$(ru)`. Parsing is separate from evaluation so an unknown
//! name is reported the same way for reads and writes.

/// A parsed pseudo-variable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PvName<'a> {
    /// A plain class like `ru`, `fU`, `si`.
    Plain(&'a str),
    /// A class with an inner name: `var(x)`, `avp(x)`, `hdr(Via)`.
    Named(&'a str, &'a str),
}

/// Parse `$name`, `$name(inner)` or `$(name)`. `None` when malformed.
pub fn parse(text: &str) -> Option<PvName<'_>> {
    let body = text.trim().strip_prefix('$')?;
    let body = match body.strip_prefix('(') {
        Some(inner) => inner.strip_suffix(')')?,
        None => body,
    };
    if let Some(open) = body.find('(') {
        let class = &body[..open];
        let inner = body[open + 1..].strip_suffix(')')?;
        if !valid_class(class) || inner.is_empty() {
            return None;
        }
        return Some(PvName::Named(class, inner));
    }
    valid_class(body).then_some(PvName::Plain(body))
}

fn valid_class(class: &str) -> bool {
    !class.is_empty()
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_scripts_use() {
        assert_eq!(parse("$ru"), Some(PvName::Plain("ru")));
        assert_eq!(parse("$(ru)"), Some(PvName::Plain("ru")));
        assert_eq!(parse("$var(x)"), Some(PvName::Named("var", "x")));
        assert_eq!(
            parse("$hdr(X-Custom)"),
            Some(PvName::Named("hdr", "X-Custom"))
        );
        assert_eq!(parse("$T_branch_idx"), Some(PvName::Plain("T_branch_idx")));
        assert_eq!(parse("ru"), None);
        assert_eq!(parse("$var("), None);
        assert_eq!(parse("$var()"), None);
        assert_eq!(parse("$"), None);
        assert_eq!(parse("$a b"), None);
    }
}
