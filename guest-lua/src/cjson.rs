//! `require "cjson"` and `require "cjson.safe"`: JSON with lua-cjson's API
//! (encode, decode, `null`, `empty_array`, `array_mt`, `empty_array_mt`,
//! the `encode_*` / `decode_*` settings, `new()`), written for the sandbox.
//!
//! Everything a script can make it do is bounded: nesting by the
//! `*_max_depth` settings (at most [`DEPTH_CEILING`]), and the JSON text,
//! in or out, by [`Limits::max_text`], derived from the Lua memory limit so
//! that the Rust buffers behind it cannot reach the instance's hard memory
//! cap. Going past a bound is a Lua error, never a trap. Decoded values are
//! Lua values allocated by Lua, so Lua's own memory limit applies to them.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{
    Error, FromLuaMulti, Function, IntoLuaMulti, LightUserData, Lua, MultiValue, Result, Table,
    Value,
};

/// The deepest nesting a script may configure: deeper recursion could run
/// the guest's stack out (a trap), and no SIP-related JSON nests this deep.
pub const DEPTH_CEILING: i64 = 1000;

/// lua-cjson's default for both max depth settings.
const DEFAULT_DEPTH: usize = 1000;

/// The longest JSON text without a memory limit (and at most with one).
const TEXT_CEILING: usize = 4 << 20;

/// `cjson.null`: a NULL lightuserdata, as lua-cjson's.
fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// `cjson.empty_array`: a lightuserdata distinct from `null`.
fn empty_array() -> Value {
    Value::LightUserData(LightUserData(std::ptr::dangling_mut::<u8>().cast()))
}

/// What `encode_invalid_numbers` says about NaN and infinities.
#[derive(Clone, Copy, PartialEq)]
enum Invalid {
    Refuse,
    AsNull,
    Allow,
}

/// One cjson instance's settings (`cjson.new()` starts from the defaults).
#[derive(Clone, Copy)]
struct Settings {
    encode_max_depth: usize,
    decode_max_depth: usize,
    sparse_convert: bool,
    sparse_ratio: i64,
    sparse_safe: i64,
    precision: usize,
    empty_table_as_object: bool,
    array_with_array_mt: bool,
    escape_forward_slash: bool,
    encode_invalid: Invalid,
    decode_invalid: bool,
    keep_buffer: bool,
    max_text: usize,
}

impl Settings {
    fn new(max_text: usize) -> Settings {
        Settings {
            encode_max_depth: DEFAULT_DEPTH,
            decode_max_depth: DEFAULT_DEPTH,
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            precision: 14,
            empty_table_as_object: true,
            array_with_array_mt: false,
            escape_forward_slash: true,
            encode_invalid: Invalid::Refuse,
            decode_invalid: true,
            keep_buffer: true,
            max_text,
        }
    }
}

/// The JSON text bound for a Lua memory limit (0: none).
pub fn max_text(memory_limit: u64) -> usize {
    if memory_limit == 0 {
        return TEXT_CEILING;
    }
    usize::try_from(memory_limit / 4)
        .unwrap_or(TEXT_CEILING)
        .min(TEXT_CEILING)
}

/// Returned first by a module function that failed, with the message:
/// the Lua wrapper ([`RAISE`]) raises the message as a string error, as
/// lua-cjson does (an error returned from a Rust callback would reach
/// `pcall` as a userdata instead). Scripts cannot make a lightuserdata, so
/// they cannot forge it.
fn fail() -> Value {
    Value::LightUserData(LightUserData(std::ptr::without_provenance_mut(2)))
}

/// Wraps every function of a module table (and of those `new()` makes) so
/// a [`fail`] result becomes a string error without position, like
/// luaL_error from a C function.
const RAISE: &str = r#"
local m, FAIL = ...
local error, pairs, type = error, pairs, type
local function check(first, ...)
    if first == FAIL then error((...), 0) end
    return first, ...
end
local function wrap(t)
    for k, f in pairs(t) do
        if type(f) == "function" then t[k] = function(...) return check(f(...)) end end
    end
    local new = t.new
    t.new = function() return wrap(new()) end
    return t
end
return wrap(m)
"#;

/// A module function: a Rust error is returned as `FAIL, message`.
fn guarded<A, R, F>(lua: &Lua, f: F) -> Result<Function>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
    F: Fn(&Lua, A) -> Result<R> + 'static,
{
    lua.create_function(move |lua, args: MultiValue| {
        let result = A::from_lua_multi(args, lua)
            .and_then(|a| f(lua, a))
            .and_then(|r| r.into_lua_multi(lua));
        match result {
            Ok(values) => Ok(values),
            Err(e) => Ok(MultiValue::from_iter([
                fail(),
                Value::String(lua.create_string(error_text(&e))?),
            ])),
        }
    })
}

/// The `cjson` module (`safe`: `cjson.safe`, whose encode and decode return
/// `nil, message` instead of raising).
pub fn open(lua: &Lua, safe: bool, max_text: usize) -> Result<Table> {
    let raw = module(lua, safe, Settings::new(max_text))?;
    lua.load(RAISE).set_name("=cjson").call((raw, fail()))
}

fn metatable(lua: &Lua, key: &str) -> Result<Table> {
    if let Ok(t) = lua.named_registry_value::<Table>(key) {
        return Ok(t);
    }
    let t = lua.create_table()?;
    lua.set_named_registry_value(key, &t)?;
    Ok(t)
}

const ARRAY_MT: &str = "kemibox.cjson.array_mt";
const EMPTY_ARRAY_MT: &str = "kemibox.cjson.empty_array_mt";

fn module(lua: &Lua, safe: bool, settings: Settings) -> Result<Table> {
    let s = Rc::new(RefCell::new(settings));
    let m = lua.create_table()?;
    m.set("_NAME", if safe { "cjson.safe" } else { "cjson" })?;
    m.set("_VERSION", "2.1.0")?;
    m.set("null", null())?;
    m.set("empty_array", empty_array())?;
    m.set("array_mt", metatable(lua, ARRAY_MT)?)?;
    m.set("empty_array_mt", metatable(lua, EMPTY_ARRAY_MT)?)?;

    let st = s.clone();
    m.set(
        "encode",
        guarded(lua, move |lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(Error::runtime(
                    "bad argument #1 to 'encode' (expected 1 argument)",
                ));
            }
            let settings = *st.borrow();
            let result = Encoder::new(lua, &settings).and_then(|mut e| {
                e.value(&args[0], 0)?;
                lua.create_string(&e.out)
            });
            outcome(lua, safe, result.map(Value::String))
        })?,
    )?;
    let st = s.clone();
    m.set(
        "decode",
        guarded(lua, move |lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(Error::runtime(
                    "bad argument #1 to 'decode' (expected 1 argument)",
                ));
            }
            // A wrong type is a failure of the conversion: `cjson.safe`
            // answers it with `nil, message` (lua-cjson checks it inside
            // its protected call; only the count is checked before).
            let settings = *st.borrow();
            let result = match &args[0] {
                Value::String(text) => {
                    let bytes = text.as_bytes();
                    if bytes.len() > settings.max_text {
                        Err(Error::runtime(format!(
                            "Cannot decode: JSON text of {} bytes is over the sandbox's limit of {} bytes",
                            bytes.len(),
                            settings.max_text
                        )))
                    } else {
                        Decoder::new(lua, &settings, &bytes).and_then(|mut d| d.document())
                    }
                }
                other => Err(Error::runtime(format!(
                    "bad argument #1 to 'decode' (string expected, got {})",
                    other.type_name()
                ))),
            };
            outcome(lua, safe, result)
        })?,
    )?;
    let st = s.clone();
    m.set(
        "new",
        guarded(lua, move |lua, ()| {
            let max = st.borrow().max_text;
            module(lua, safe, Settings::new(max))
        })?,
    )?;
    settings_functions(lua, &m, &s)?;
    Ok(m)
}

/// A boolean option's argument: `true`/`false` or `"on"`/`"off"`; `None`
/// when not given.
fn bool_option(v: &Value, function: &str) -> Result<Option<bool>> {
    match v {
        Value::Nil => Ok(None),
        Value::Boolean(b) => Ok(Some(*b)),
        Value::String(s) if s.as_bytes()[..] == *b"on" => Ok(Some(true)),
        Value::String(s) if s.as_bytes()[..] == *b"off" => Ok(Some(false)),
        other => Err(Error::runtime(format!(
            "bad argument #1 to '{function}' (invalid option '{}')",
            other.to_string().unwrap_or_default()
        ))),
    }
}

/// An integer option's argument within `min..=max`; `None` when not given.
fn int_option(
    v: &Value,
    function: &str,
    position: usize,
    min: i64,
    max: i64,
) -> Result<Option<i64>> {
    let n = match v {
        Value::Nil => return Ok(None),
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 && n.is_finite() => Some(*n as i64),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(Error::runtime(format!(
            "bad argument #{position} to '{function}' (expected integer between {min} and {max})"
        ))),
    }
}

type Flag = fn(&mut Settings) -> &mut bool;

/// The `encode_*` / `decode_*` settings: each sets its value when given
/// one and returns the current value(s), as lua-cjson's.
fn settings_functions(lua: &Lua, m: &Table, s: &Rc<RefCell<Settings>>) -> Result<()> {
    let flags: [(&'static str, Flag); 5] = [
        ("encode_empty_table_as_object", |s| {
            &mut s.empty_table_as_object
        }),
        ("decode_array_with_array_mt", |s| &mut s.array_with_array_mt),
        ("encode_escape_forward_slash", |s| {
            &mut s.escape_forward_slash
        }),
        ("encode_keep_buffer", |s| &mut s.keep_buffer),
        ("decode_invalid_numbers", |s| &mut s.decode_invalid),
    ];
    for (name, field) in flags {
        let st = s.clone();
        let f = guarded(lua, move |_, v: Value| {
            let mut settings = st.borrow_mut();
            if let Some(b) = bool_option(&v, name)? {
                *field(&mut settings) = b;
            }
            Ok(*field(&mut settings))
        })?;
        m.set(name, f)?;
    }
    type Depth = fn(&mut Settings) -> &mut usize;
    let ints: [(&'static str, Depth, i64); 3] = [
        (
            "encode_max_depth",
            |s| &mut s.encode_max_depth,
            DEPTH_CEILING,
        ),
        (
            "decode_max_depth",
            |s| &mut s.decode_max_depth,
            DEPTH_CEILING,
        ),
        ("encode_number_precision", |s| &mut s.precision, 16),
    ];
    for (name, field, max) in ints {
        let st = s.clone();
        let f = guarded(lua, move |_, v: Value| {
            let mut settings = st.borrow_mut();
            if let Some(n) = int_option(&v, name, 1, 1, max)? {
                *field(&mut settings) = n as usize;
            }
            Ok(*field(&mut settings) as i64)
        })?;
        m.set(name, f)?;
    }
    let st = s.clone();
    m.set(
        "encode_sparse_array",
        guarded(
            lua,
            move |_, (convert, ratio, safe): (Value, Value, Value)| {
                let mut settings = st.borrow_mut();
                const NAME: &str = "encode_sparse_array";
                if let Some(b) = bool_option(&convert, NAME)? {
                    settings.sparse_convert = b;
                }
                if let Some(r) = int_option(&ratio, NAME, 2, 0, i64::from(i32::MAX))? {
                    settings.sparse_ratio = r;
                }
                if let Some(n) = int_option(&safe, NAME, 3, 0, i64::from(i32::MAX))? {
                    settings.sparse_safe = n;
                }
                Ok((
                    settings.sparse_convert,
                    settings.sparse_ratio,
                    settings.sparse_safe,
                ))
            },
        )?,
    )?;
    let st = s.clone();
    m.set(
        "encode_invalid_numbers",
        guarded(lua, move |lua, v: Value| {
            let mut settings = st.borrow_mut();
            let null = matches!(&v, Value::String(s) if s.as_bytes()[..] == *b"null");
            if null {
                settings.encode_invalid = Invalid::AsNull;
            } else if let Some(b) = bool_option(&v, "encode_invalid_numbers")? {
                settings.encode_invalid = if b { Invalid::Allow } else { Invalid::Refuse };
            }
            Ok(match settings.encode_invalid {
                Invalid::Refuse => Value::Boolean(false),
                Invalid::Allow => Value::Boolean(true),
                Invalid::AsNull => Value::String(lua.create_string("null")?),
            })
        })?,
    )?;
    Ok(())
}

/// `cjson.safe` turns an error into `nil, message`.
fn outcome(lua: &Lua, safe: bool, result: Result<Value>) -> Result<MultiValue> {
    match result {
        Ok(v) => Ok(MultiValue::from_iter([v])),
        Err(e) if safe => Ok(MultiValue::from_iter([
            Value::Nil,
            Value::String(lua.create_string(error_text(&e))?),
        ])),
        Err(e) => Err(e),
    }
}

fn error_text(e: &Error) -> String {
    match e {
        Error::RuntimeError(m) => m.clone(),
        Error::CallbackError { cause, .. } => error_text(cause),
        other => other.to_string(),
    }
}

/// C's `%.{precision}g`.
fn format_g(n: f64, precision: usize) -> String {
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{:.*e}", precision - 1, n);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i32 {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{n:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

struct Encoder<'a> {
    settings: &'a Settings,
    array_mt: Table,
    empty_array_mt: Table,
    out: Vec<u8>,
}

impl<'a> Encoder<'a> {
    fn new(lua: &Lua, settings: &'a Settings) -> Result<Encoder<'a>> {
        Ok(Encoder {
            settings,
            array_mt: metatable(lua, ARRAY_MT)?,
            empty_array_mt: metatable(lua, EMPTY_ARRAY_MT)?,
            out: Vec::new(),
        })
    }

    fn check_size(&self) -> Result<()> {
        if self.out.len() > self.settings.max_text {
            return Err(Error::runtime(format!(
                "Cannot serialise: JSON text over the sandbox's limit of {} bytes",
                self.settings.max_text
            )));
        }
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<()> {
        match v {
            Value::Nil => self.out.extend_from_slice(b"null"),
            Value::Boolean(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::LightUserData(p) if p.0.is_null() => self.out.extend_from_slice(b"null"),
            Value::LightUserData(p) if Value::LightUserData(*p) == empty_array() => {
                self.out.extend_from_slice(b"[]")
            }
            Value::Integer(i) => self.out.extend_from_slice(i.to_string().as_bytes()),
            Value::Number(n) => self.number(*n)?,
            Value::String(s) => self.string(&s.as_bytes())?,
            Value::Table(t) => self.table(t, depth + 1)?,
            other => {
                return Err(Error::runtime(format!(
                    "Cannot serialise {}: type not supported",
                    other.type_name()
                )));
            }
        }
        self.check_size()
    }

    fn number(&mut self, n: f64) -> Result<()> {
        if !n.is_finite() {
            match self.settings.encode_invalid {
                Invalid::Refuse => {
                    return Err(Error::runtime(
                        "Cannot serialise number: must not be NaN or Infinity",
                    ));
                }
                Invalid::AsNull => {
                    self.out.extend_from_slice(b"null");
                    return Ok(());
                }
                Invalid::Allow => {}
            }
        }
        let text = if n.is_nan() {
            "nan".to_string()
        } else if n.is_infinite() {
            if n > 0.0 { "inf" } else { "-inf" }.to_string()
        } else {
            format_g(n, self.settings.precision)
        };
        self.out.extend_from_slice(text.as_bytes());
        Ok(())
    }

    fn string(&mut self, s: &[u8]) -> Result<()> {
        self.out.push(b'"');
        let mut plain = 0;
        for (i, &b) in s.iter().enumerate() {
            let escape: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'/' if self.settings.escape_forward_slash => Some(b"\\/"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x08 => Some(b"\\b"),
                0x0c => Some(b"\\f"),
                0..0x20 => None,
                _ => continue,
            };
            self.out.extend_from_slice(&s[plain..i]);
            plain = i + 1;
            match escape {
                Some(e) => self.out.extend_from_slice(e),
                None => self
                    .out
                    .extend_from_slice(format!("\\u{:04x}", u32::from(b)).as_bytes()),
            }
            self.check_size()?;
        }
        self.out.extend_from_slice(&s[plain..]);
        self.out.push(b'"');
        self.check_size()
    }

    /// lua-cjson's array test: `Some(length)` when every key is a positive
    /// integer and the table is not too sparse, `None` for an object.
    fn array_length(&self, t: &Table) -> Result<Option<i64>> {
        let mut max = 0i64;
        let mut items = 0i64;
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair?;
            match k {
                Value::Integer(i) if i >= 1 => {
                    max = max.max(i);
                    items += 1;
                }
                _ => return Ok(None),
            }
        }
        let s = self.settings;
        if s.sparse_ratio > 0 && max > items.saturating_mul(s.sparse_ratio) && max > s.sparse_safe {
            if !s.sparse_convert {
                return Err(Error::runtime(
                    "Cannot serialise table: excessively sparse array",
                ));
            }
            return Ok(None);
        }
        Ok(Some(max))
    }

    fn table(&mut self, t: &Table, depth: usize) -> Result<()> {
        if depth > self.settings.encode_max_depth {
            return Err(Error::runtime(format!(
                "Cannot serialise, excessive nesting ({depth})"
            )));
        }
        let meta = t.metatable();
        if let Some(meta) = &meta
            && (meta == &self.array_mt || meta == &self.empty_array_mt && t.raw_len() == 0)
        {
            return self.array(t, t.raw_len() as i64, depth);
        }
        match self.array_length(t)? {
            Some(0) if self.settings.empty_table_as_object => {
                self.out.extend_from_slice(b"{}");
                Ok(())
            }
            Some(len) => self.array(t, len, depth),
            None => self.object(t, depth),
        }
    }

    fn array(&mut self, t: &Table, len: i64, depth: usize) -> Result<()> {
        self.out.push(b'[');
        for i in 1..=len {
            if i > 1 {
                self.out.push(b',');
            }
            let v: Value = t.raw_get(i)?;
            self.value(&v, depth)?;
        }
        self.out.push(b']');
        Ok(())
    }

    fn object(&mut self, t: &Table, depth: usize) -> Result<()> {
        self.out.push(b'{');
        let mut first = true;
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            if !first {
                self.out.push(b',');
            }
            first = false;
            match &k {
                Value::String(s) => self.string(&s.as_bytes())?,
                Value::Integer(i) => {
                    self.out.push(b'"');
                    self.out.extend_from_slice(i.to_string().as_bytes());
                    self.out.push(b'"');
                }
                Value::Number(n) => {
                    self.out.push(b'"');
                    self.number(*n)?;
                    self.out.push(b'"');
                }
                _ => {
                    return Err(Error::runtime(
                        "Cannot serialise table: table key must be a number or string",
                    ));
                }
            }
            self.out.push(b':');
            self.value(&v, depth)?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

struct Decoder<'a> {
    lua: &'a Lua,
    settings: &'a Settings,
    text: &'a [u8],
    at: usize,
    depth: usize,
    array_mt: Option<Table>,
}

/// A token where a value or punctuation was expected: lua-cjson's names.
fn token_name(b: Option<u8>) -> &'static str {
    match b {
        None => "T_END",
        Some(b'{') => "T_OBJ_BEGIN",
        Some(b'}') => "T_OBJ_END",
        Some(b'[') => "T_ARR_BEGIN",
        Some(b']') => "T_ARR_END",
        Some(b'"') => "T_STRING",
        Some(b'-' | b'0'..=b'9') => "T_NUMBER",
        Some(b't' | b'f') => "T_BOOLEAN",
        Some(b'n') => "T_NULL",
        Some(b':') => "T_COLON",
        Some(b',') => "T_COMMA",
        Some(_) => "invalid token",
    }
}

impl<'a> Decoder<'a> {
    fn new(lua: &'a Lua, settings: &'a Settings, text: &'a [u8]) -> Result<Decoder<'a>> {
        let array_mt = if settings.array_with_array_mt {
            Some(metatable(lua, ARRAY_MT)?)
        } else {
            None
        };
        Ok(Decoder {
            lua,
            settings,
            text,
            at: 0,
            depth: 0,
            array_mt,
        })
    }

    fn fail<T>(&self, expected: &str, found: &str, at: usize) -> Result<T> {
        Err(Error::runtime(format!(
            "Expected {expected} but found {found} at character {}",
            at + 1
        )))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.get(self.at).copied()
    }

    fn document(&mut self) -> Result<Value> {
        let v = self.value("value")?;
        let next = self.peek();
        if next.is_some() {
            return self.fail("the end", token_name(next), self.at);
        }
        Ok(v)
    }

    fn value(&mut self, expected: &str) -> Result<Value> {
        let start = self.at;
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Value::String(self.lua.create_string(self.string()?)?)),
            Some(b'-' | b'0'..=b'9') => self.number(expected),
            Some(b't') if self.word(b"true") => Ok(Value::Boolean(true)),
            Some(b'f') if self.word(b"false") => Ok(Value::Boolean(false)),
            Some(b'n') if self.word(b"null") => Ok(null()),
            Some(b'i' | b'I' | b'n' | b'N') if self.settings.decode_invalid => {
                self.number(expected)
            }
            None => self.fail(expected, "T_END", start.max(self.at)),
            Some(b @ (b'}' | b']' | b':' | b',')) => {
                self.fail(expected, token_name(Some(b)), self.at)
            }
            Some(_) => self.fail(expected, "invalid token", self.at),
        }
    }

    fn word(&mut self, w: &[u8]) -> bool {
        if self.text[self.at..].starts_with(w) {
            self.at += w.len();
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > self.settings.decode_max_depth {
            return Err(Error::runtime(format!(
                "Found too many nested data structures ({}) at character {}",
                self.depth,
                self.at + 1
            )));
        }
        Ok(())
    }

    fn array(&mut self) -> Result<Value> {
        self.enter()?;
        self.at += 1;
        let t = self.lua.create_table()?;
        if let Some(mt) = &self.array_mt {
            t.set_metatable(Some(mt.clone()))?;
        }
        if self.peek() == Some(b']') {
            self.at += 1;
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        let mut i = 1i64;
        loop {
            let v = self.value("value")?;
            t.raw_set(i, v)?;
            i += 1;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    break;
                }
                other => return self.fail("comma or array end", token_name(other), self.at),
            }
        }
        self.depth -= 1;
        Ok(Value::Table(t))
    }

    fn object(&mut self) -> Result<Value> {
        self.enter()?;
        self.at += 1;
        let t = self.lua.create_table()?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        loop {
            match self.peek() {
                Some(b'"') => {}
                other => return self.fail("object key string", token_name(other), self.at),
            }
            let key = self.lua.create_string(self.string()?)?;
            match self.peek() {
                Some(b':') => self.at += 1,
                other => return self.fail("colon", token_name(other), self.at),
            }
            let v = self.value("value")?;
            t.raw_set(key, v)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                other => return self.fail("comma or object end", token_name(other), self.at),
            }
        }
        self.depth -= 1;
        Ok(Value::Table(t))
    }

    /// A string token at `self.at` (the opening quote): its bytes.
    fn string(&mut self) -> Result<Vec<u8>> {
        let start = self.at;
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.text.get(self.at) else {
                return self.fail("value", "unexpected end of string", start);
            };
            self.at += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(&e) = self.text.get(self.at) else {
                        return self.fail("value", "unexpected end of string", start);
                    };
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let c = self.unicode().ok_or_else(|| {
                                Error::runtime(format!(
                                    "Expected value but found invalid unicode escape code at character {}",
                                    start + 1
                                ))
                            })?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return self.fail("value", "invalid escape code", start),
                    }
                }
                _ => out.push(b),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        let v = u32::from_str_radix(text, 16).ok()?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.at += 4;
        Some(v)
    }

    /// After `\u`: one code point, a surrogate pair joined.
    fn unicode(&mut self) -> Option<char> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                if self.text.get(self.at..self.at + 2) != Some(b"\\u") {
                    return None;
                }
                self.at += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return None;
                }
                char::from_u32(0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00))
            }
            0xDC00..=0xDFFF => None,
            c => char::from_u32(c),
        }
    }

    fn number(&mut self, expected: &str) -> Result<Value> {
        let start = self.at;
        let end = self.text[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')))
            .map_or(self.text.len(), |n| start + n);
        let token = std::str::from_utf8(&self.text[start..end]).unwrap_or("");
        self.at = end;
        if let Some(v) = parse_number(token, self.settings.decode_invalid) {
            return Ok(v);
        }
        // A word that is not nan/inf was never a number (`nul`).
        let found = if token.starts_with(|c: char| c.is_ascii_alphabetic()) {
            "invalid token"
        } else {
            "invalid number"
        };
        self.fail(expected, found, start)
    }
}

/// A JSON number: a Lua integer when it has no fraction or exponent and
/// fits, else a float. With `invalid` also NaN and infinities.
fn parse_number(token: &str, invalid: bool) -> Option<Value> {
    let digits = token.strip_prefix('-').unwrap_or(token);
    let strict = !digits.is_empty()
        && digits.as_bytes()[0].is_ascii_digit()
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if strict {
        if !digits.contains(['.', 'e', 'E'])
            && let Ok(i) = token.parse::<i64>()
        {
            return Some(Value::Integer(i));
        }
        return token.parse::<f64>().ok().map(Value::Number);
    }
    if invalid {
        let lower = digits.to_ascii_lowercase();
        let sign = if token.starts_with('-') { -1.0 } else { 1.0 };
        return match lower.as_str() {
            "inf" | "infinity" => Some(Value::Number(sign * f64::INFINITY)),
            "nan" => Some(Value::Number(f64::NAN)),
            _ => None,
        };
    }
    None
}
