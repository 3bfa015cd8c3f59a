//! Conversions between Lua values and KEMI parameter/result types.
//!
//! KEMI parameters are strings or integers. Like Kamailio's app_lua, numbers
//! are accepted where strings are expected and numeric strings where integers
//! are expected; anything else is a bad argument: logged, and the function
//! returns its type's negative value instead of running (never a crash).

use std::ops::Deref;

use mlua::{BorrowedStr, IntoLuaMulti, Lua, MultiValue, Value};

use crate::kemibox::ksr::types::Xval;

/// A string argument borrowed from Lua where it is valid UTF-8.
pub enum StrArg {
    Lua(BorrowedStr),
    Owned(String),
}

impl Deref for StrArg {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            StrArg::Lua(s) => s,
            StrArg::Owned(s) => s,
        }
    }
}

/// Longest string a KSR function accepts: a SIP message is at most 64 KiB,
/// so nothing longer is meaningful, and copying it to the host is refused.
pub const MAX_STR_ARG: usize = 65536;

/// A `str` parameter: a Lua string (invalid UTF-8 replaced) or a number.
/// `Ok(None)` for another type (a bad argument); a Lua error, catchable
/// with pcall, for a string over [`MAX_STR_ARG`] bytes.
pub fn str_arg(v: &Value, function: &str, position: usize) -> mlua::Result<Option<StrArg>> {
    Ok(match v {
        Value::String(s) => {
            let len = s.as_bytes().len();
            if len > MAX_STR_ARG {
                return Err(mlua::Error::RuntimeError(format!(
                    "bad argument #{position} to '{function}' (string of {len} bytes, at most {MAX_STR_ARG})"
                )));
            }
            Some(match s.to_str() {
                Ok(b) => StrArg::Lua(b),
                Err(_) => StrArg::Owned(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
            })
        }
        Value::Integer(i) => Some(StrArg::Owned(i.to_string())),
        Value::Number(n) => Some(StrArg::Owned(lua_number_string(*n))),
        _ => None,
    })
}

/// An `int` parameter: an integer, a float with an integral value, or a
/// numeric string, within the i32 range.
pub fn int_arg(v: &Value) -> Option<i32> {
    let wide: i64 = match v {
        Value::Integer(i) => *i,
        Value::Number(n) if n.fract() == 0.0 && n.is_finite() => *n as i64,
        Value::String(s) => {
            let text = s.to_str().ok()?;
            let text = text.trim();
            text.parse::<i64>().ok().or_else(|| {
                text.parse::<f64>()
                    .ok()
                    .filter(|n| n.fract() == 0.0)
                    .map(|n| n as i64)
            })?
        }
        _ => return None,
    };
    i32::try_from(wide).ok()
}

fn lua_number_string(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.1}")
    } else {
        format!("{n}")
    }
}

/// Lua type name for bad-argument messages.
pub fn type_name(v: &Value) -> &'static str {
    v.type_name()
}

/// What the host returns from a KSR function the route type does not
/// allow (`kemibox_kemi::REFUSED`; see wit/types.wit): the script gets -1,
/// as from Kamailio, and the refusal is logged with the script line.
pub const REFUSED: i32 = i32::MIN;

/// A KEMI result type: how it is returned to Lua, and what a call with bad
/// arguments returns instead.
pub trait KemiResult: Sized {
    fn bad_argument() -> Self;
    fn into_lua(self, lua: &Lua) -> mlua::Result<MultiValue>;
    /// Whether the host refused the call ([`REFUSED`]).
    fn refused(&self) -> bool {
        false
    }
    /// Whether the result is the kind a failing function returns (a
    /// negative integer, nil, or false from a function given arguments the
    /// script may have got wrong): only then may the host hold a script
    /// error for the call, so only then is it asked (one host call, not one
    /// per KSR call). A predicate without arguments (`KSR.is_INVITE()`)
    /// answering false is no failure, and costs no second call.
    fn failed(&self, _has_args: bool) -> bool {
        false
    }
}

impl KemiResult for i32 {
    fn bad_argument() -> Self {
        -1
    }
    fn refused(&self) -> bool {
        *self == REFUSED
    }
    fn failed(&self, _has_args: bool) -> bool {
        *self < 0
    }
    fn into_lua(self, lua: &Lua) -> mlua::Result<MultiValue> {
        self.into_lua_multi(lua)
    }
}

impl KemiResult for bool {
    fn bad_argument() -> Self {
        false
    }
    fn failed(&self, has_args: bool) -> bool {
        has_args && !*self
    }
    fn into_lua(self, lua: &Lua) -> mlua::Result<MultiValue> {
        self.into_lua_multi(lua)
    }
}

impl KemiResult for () {
    fn bad_argument() -> Self {}
    fn into_lua(self, _lua: &Lua) -> mlua::Result<MultiValue> {
        Ok(MultiValue::new())
    }
}

impl KemiResult for Xval {
    fn bad_argument() -> Self {
        Xval::Null
    }
    fn failed(&self, _has_args: bool) -> bool {
        matches!(self, Xval::Null)
    }
    fn into_lua(self, lua: &Lua) -> mlua::Result<MultiValue> {
        match self {
            Xval::Null => Value::Nil.into_lua_multi(lua),
            Xval::Int(i) => i.into_lua_multi(lua),
            Xval::Str(s) => lua.create_string(s)?.into_lua_multi(lua),
        }
    }
}

/// `script:LINE: ` of the Lua code that called the running KSR function
/// (stack level 1), or "" when Lua cannot tell.
fn place(lua: &Lua) -> String {
    lua.inspect_stack(1, |d| {
        let file = d.source().short_src.map(|s| s.into_owned());
        match (file, d.current_line()) {
            (Some(file), Some(line)) => format!("{file}:{line}: "),
            _ => String::new(),
        }
    })
    .unwrap_or_default()
}

/// Log a refused call (`script:line: KSR.x.y is not allowed in this route
/// type`) through the host and return -1.
pub fn refused<R: KemiResult>(lua: &Lua, function: &str) -> mlua::Result<MultiValue> {
    crate::kemibox::ksr::core::err(&format!(
        "{}{function} is not allowed in this route type\n",
        place(lua)
    ));
    R::bad_argument().into_lua(lua)
}

/// After a call that returned a failure: the script error the host
/// recorded for it, if any, logged with the calling script line
/// (`route.lua:12: KSR.htable.sht_get: no such table "x"`).
pub fn log_script_error(lua: &Lua) {
    if let Some(error) = crate::take_script_error() {
        crate::kemibox::ksr::core::err(&format!("{}{error}\n", place(lua)));
    }
}

/// Log a bad argument through the host, with the calling script line, and
/// return the fallback result.
pub fn bad_argument<R: KemiResult>(
    lua: &Lua,
    function: &str,
    position: usize,
    expected: &str,
    got: &Value,
) -> mlua::Result<MultiValue> {
    crate::kemibox::ksr::core::err(&format!(
        "{}{function}: bad argument #{position} ({expected} expected, got {})\n",
        place(lua),
        type_name(got)
    ));
    R::bad_argument().into_lua(lua)
}
