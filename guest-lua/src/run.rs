//! The exported script operations: load, list, invoke.

use std::cell::RefCell;

use mlua::{Function, Value};

use crate::exports::kemibox::ksr::script::{
    Failure, LoadError, LoadOptions, LuaModule, RouteError,
};
use crate::sandbox::{self, Sandbox};

struct Loaded {
    sandbox: Sandbox,
    chunk_name: String,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

/// Lua's message for allocation failure (LUA_ERRMEM); the message handler
/// is not called for it, so it arrives bare.
const OUT_OF_MEMORY: &str = "not enough memory";

pub fn load(source: &str, options: &LoadOptions) -> Result<(), LoadError> {
    let failed = |e: mlua::Error| load_error(&options.chunk_name, &error_text(&e));
    let sandbox =
        sandbox::new(&options.modules, options.memory_limit, &options.env).map_err(failed)?;
    for module in &options.lua_modules {
        compile_module(&sandbox, module)?;
    }
    let chunk = sandbox
        .lua
        .load(source.as_bytes())
        .set_name(format!("@{}", options.chunk_name))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
        .map_err(failed)?;
    let (ok, value): (bool, Value) = sandbox.run.call(chunk).map_err(failed)?;
    if !ok && !value.equals(&sandbox.exit).unwrap_or(false) {
        let text = value_text(&value);
        let (message, _) = split_traceback(&text);
        return Err(load_error(&options.chunk_name, message));
    }
    STATE.with(|s| {
        *s.borrow_mut() = Some(Loaded {
            sandbox,
            chunk_name: options.chunk_name.clone(),
        })
    });
    Ok(())
}

/// Compile one of the tenant's Lua modules into the sandbox's module table:
/// a syntax error refuses the script, naming the module's file and line.
fn compile_module(sandbox: &Sandbox, module: &LuaModule) -> Result<(), LoadError> {
    let failed = |e: mlua::Error| LoadError {
        line: None,
        message: format!("{} (in Lua module '{}')", error_text(&e), module.name),
    };
    let f = sandbox
        .lua
        .load(module.source.as_bytes())
        .set_name(format!("@{}", module.file))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
        .map_err(failed)?;
    sandbox
        .lua_modules
        .raw_set(module.name.as_str(), f)
        .map_err(failed)
}

pub fn functions() -> Vec<String> {
    STATE.with(|s| {
        let state = s.borrow();
        let Some(loaded) = state.as_ref() else {
            return Vec::new();
        };
        let mut names: Vec<String> = loaded
            .sandbox
            .lua
            .globals()
            .pairs::<Value, Value>()
            .filter_map(|pair| match pair {
                Ok((Value::String(k), Value::Function(_))) => {
                    k.to_str().ok().map(|s| s.to_string())
                }
                _ => None,
            })
            .collect();
        names.sort();
        names
    })
}

pub fn invoke(name: &str) -> Result<i32, RouteError> {
    STATE.with(|s| {
        let state = s.borrow();
        let Some(loaded) = state.as_ref() else {
            return Err(route_error(
                Failure::NotFound,
                "no script is loaded".into(),
                String::new(),
                None,
            ));
        };
        let func: Option<Function> = loaded.sandbox.lua.globals().raw_get(name).ok();
        let Some(func) = func else {
            return Err(route_error(
                Failure::NotFound,
                format!("function '{name}' is not defined by the script"),
                String::new(),
                None,
            ));
        };
        let outcome: mlua::Result<(bool, Value)> = loaded.sandbox.run.call(func);
        match outcome {
            Ok((true, value)) => Ok(kemi_int(&value)),
            Ok((false, value)) if value.equals(&loaded.sandbox.exit).unwrap_or(false) => Ok(0),
            Ok((false, value)) => {
                let text = value_text(&value);
                let kind = if text == OUT_OF_MEMORY {
                    Failure::Memory
                } else {
                    Failure::Runtime
                };
                let (message, traceback) = split_traceback(&text);
                Err(route_error(
                    kind,
                    message.to_string(),
                    traceback,
                    line_of(&loaded.chunk_name, &text),
                ))
            }
            Err(e) => {
                let kind = if matches!(e, mlua::Error::MemoryError(_)) {
                    Failure::Memory
                } else {
                    Failure::Runtime
                };
                let text = error_text(&e);
                Err(route_error(
                    kind,
                    text.clone(),
                    String::new(),
                    line_of(&loaded.chunk_name, &text),
                ))
            }
        }
    })
}

pub fn reachable() -> Vec<String> {
    STATE.with(|s| {
        let state = s.borrow();
        let Some(loaded) = state.as_ref() else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for (key, value) in loaded.sandbox.ksr.pairs::<String, Value>().flatten() {
            match value {
                Value::Function(_) => names.push(format!("core.{key}")),
                Value::Table(module) => {
                    // Modules are frozen views: list the functions behind them.
                    let Some(meta) = module.metatable() else {
                        continue;
                    };
                    let Ok(inner) = meta.get::<mlua::Table>("__index") else {
                        continue;
                    };
                    for (name, f) in inner.pairs::<String, Value>().flatten() {
                        if matches!(f, Value::Function(_)) {
                            names.push(format!("{key}.{name}"));
                        }
                    }
                }
                _ => {}
            }
        }
        names.sort();
        names
    })
}

fn route_error(kind: Failure, message: String, traceback: String, line: Option<u32>) -> RouteError {
    RouteError {
        kind,
        message,
        traceback,
        line,
    }
}

/// A load failure: the line Lua reported, and the message without Lua's
/// `chunk:LINE:` prefix (the host prints `SCRIPT:LINE: message` itself).
fn load_error(chunk: &str, text: &str) -> LoadError {
    let line = line_of(chunk, text);
    let message = match line {
        Some(l) => text
            .strip_prefix(&format!("{chunk}:{l}: "))
            .unwrap_or(text)
            .to_string(),
        None => text.to_string(),
    };
    LoadError { line, message }
}

/// A route's return value as the KEMI integer.
fn kemi_int(value: &Value) -> i32 {
    match value {
        Value::Integer(i) => (*i).clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        Value::Number(n) if n.is_finite() => n.clamp(i32::MIN as f64, i32::MAX as f64) as i32,
        Value::Boolean(false) => -1,
        _ => 1,
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
        other => other
            .to_string()
            .unwrap_or_else(|_| format!("({})", other.type_name())),
    }
}

fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        other => other.to_string(),
    }
}

/// The handler's text is `message\nstack traceback:\n...`; the sandbox's
/// own frames (the prelude and the xpcall it runs routes under) are left
/// out of the traceback.
fn split_traceback(text: &str) -> (&str, String) {
    match text.find("\nstack traceback:") {
        Some(i) => {
            let frames: Vec<&str> = text[i + 1..]
                .lines()
                .filter(|l| !l.contains("kemibox-prelude") && !l.contains("in upvalue 'xpcall'"))
                .collect();
            (&text[..i], frames.join("\n"))
        }
        None => (text, String::new()),
    }
}

/// First `chunk:LINE:` position in `text`.
fn line_of(chunk: &str, text: &str) -> Option<u32> {
    let marker = format!("{chunk}:");
    let mut rest = text;
    while let Some(i) = rest.find(&marker) {
        let after = &rest[i + marker.len()..];
        let digits: &str = &after[..after.bytes().take_while(u8::is_ascii_digit).count()];
        if !digits.is_empty() && after[digits.len()..].starts_with(':') {
            return digits.parse().ok();
        }
        rest = after;
    }
    None
}
