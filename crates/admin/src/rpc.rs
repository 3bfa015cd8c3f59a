//! JSON-RPC 2.0 framing: a request parsed from a body, a response or an
//! error object rendered, and positional-or-named parameters read by name.

use serde_json::{Map, Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON, but not a request object.
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The method ran and failed (e.g. a reload refused); the message says why.
pub const FAILED: i64 = -32000;
/// No token, or not one of ours (HTTP 401).
pub const UNAUTHORIZED: i64 = -32001;
/// A tenant token asking for another tenant or a process-wide method
/// (HTTP 403).
pub const FORBIDDEN: i64 = -32003;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    pub fn failed(message: impl Into<String>) -> RpcError {
        RpcError::new(FAILED, message)
    }

    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(METHOD_NOT_FOUND, format!("no method {method:?}"))
    }

    /// The HTTP status carrying this error: 401 and 403 for the auth
    /// errors, 200 otherwise (the error is in the body).
    pub fn http_status(&self) -> (u16, &'static str) {
        match self.code {
            UNAUTHORIZED => (401, "Unauthorized"),
            FORBIDDEN => (403, "Forbidden"),
            _ => (200, "OK"),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// A request: its method and parameters, and its id (`None` for a
/// notification, which gets no response).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Value,
    pub id: Option<Value>,
}

/// Parse a request body; the error carries the id to answer with (null
/// when it could not be read).
pub fn parse(body: &[u8]) -> Result<Call, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        (
            Value::Null,
            RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        let why = if value.is_array() {
            "batch requests are not supported: send one request object per POST"
        } else {
            "the request must be a JSON object"
        };
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, why)));
    };
    let id = object.remove("id");
    let answer_id = id.clone().unwrap_or(Value::Null);
    let invalid = |why: &str| (answer_id.clone(), RpcError::new(INVALID_REQUEST, why));
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "id must be a string, a number or null"),
        ));
    }
    if object.get("jsonrpc") != Some(&Value::from("2.0")) {
        return Err(invalid("\"jsonrpc\": \"2.0\" is required"));
    }
    let method = match object.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err(invalid("\"method\" must be a string")),
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(p @ (Value::Array(_) | Value::Object(_))) => p,
        Some(_) => return Err(invalid("\"params\" must be an array or an object")),
    };
    Ok(Call { method, params, id })
}

/// A success response.
pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "result": result, "id": id})
}

/// An error response.
pub fn error(id: Value, error: &RpcError) -> Value {
    json!({
        "jsonrpc": "2.0",
        "error": {"code": error.code, "message": error.message},
        "id": id,
    })
}

/// A method's parameters, given by position (`["a"]`) or by name
/// (`{"tenant": "a"}`), read by name.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: Map<String, Value>,
}

impl Params {
    /// Check `params` against the method's parameter `names`: no more
    /// positions than names, no unknown names.
    pub fn new(method: &str, params: &Value, names: &[&str]) -> Result<Params, RpcError> {
        let usage = || {
            if names.is_empty() {
                format!("{method} takes no parameters")
            } else {
                format!("{method} takes [{}]", names.join(", "))
            }
        };
        let mut values = Map::new();
        match params {
            Value::Array(list) => {
                if list.len() > names.len() {
                    return Err(RpcError::invalid_params(format!(
                        "too many parameters: {}",
                        usage()
                    )));
                }
                for (name, value) in names.iter().zip(list) {
                    values.insert(name.to_string(), value.clone());
                }
            }
            Value::Object(map) => {
                for (name, value) in map {
                    if !names.contains(&name.as_str()) {
                        return Err(RpcError::invalid_params(format!(
                            "unknown parameter {name:?}: {}",
                            usage()
                        )));
                    }
                    values.insert(name.clone(), value.clone());
                }
            }
            _ => return Err(RpcError::invalid_params(usage())),
        }
        values.retain(|_, v| !v.is_null());
        Ok(Params { values })
    }

    /// Parameter `name` as a string, if given; a number is taken as its
    /// decimal text (`kemibox ctl` sends `1` for a tenant named "1").
    pub fn string(&self, name: &str) -> Result<Option<String>, RpcError> {
        match self.values.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(RpcError::invalid_params(format!(
                "{name} must be a string, not {other}"
            ))),
        }
    }

    /// Parameter `name` as a string; missing is an error.
    pub fn required(&self, name: &str) -> Result<String, RpcError> {
        self.string(name)?
            .ok_or_else(|| RpcError::invalid_params(format!("missing parameter {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_errors_keep_the_id() {
        let call = parse(br#"{"jsonrpc":"2.0","method":"core.version","id":7}"#).unwrap();
        assert_eq!(call.method, "core.version");
        assert_eq!(call.params, json!([]));
        assert_eq!(call.id, Some(json!(7)));
        let note = parse(br#"{"jsonrpc":"2.0","method":"m","params":{"a":1}}"#).unwrap();
        assert_eq!(note.id, None);
        assert_eq!(parse(b"{nope").unwrap_err().1.code, PARSE_ERROR);
        assert_eq!(parse(b"[]").unwrap_err().1.code, INVALID_REQUEST);
        let (id, e) = parse(br#"{"jsonrpc":"1.0","method":"m","id":"x"}"#).unwrap_err();
        assert_eq!((id, e.code), (json!("x"), INVALID_REQUEST));
        let (_, e) = parse(br#"{"jsonrpc":"2.0","method":"m","params":3,"id":1}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        let (_, e) = parse(br#"{"jsonrpc":"2.0","method":1,"id":1}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
    }

    #[test]
    fn params_by_position_or_name() {
        let names = ["tenant", "aor"];
        let p = Params::new("ul.lookup", &json!(["a", "alice@x"]), &names).unwrap();
        assert_eq!(p.required("aor").unwrap(), "alice@x");
        let p = Params::new("ul.lookup", &json!({"tenant": 1}), &names).unwrap();
        assert_eq!(p.string("tenant").unwrap().as_deref(), Some("1"));
        assert_eq!(p.required("aor").unwrap_err().code, INVALID_PARAMS);
        for bad in [json!(["a", "b", "c"]), json!({"user": "x"})] {
            let e = Params::new("ul.lookup", &bad, &names).unwrap_err();
            assert_eq!(e.code, INVALID_PARAMS, "{bad}");
            assert!(
                e.message.contains("ul.lookup takes [tenant, aor]"),
                "{}",
                e.message
            );
        }
        let p = Params::new("m", &json!([true]), &["tenant"]).unwrap();
        assert_eq!(p.string("tenant").unwrap_err().code, INVALID_PARAMS);
    }
}
