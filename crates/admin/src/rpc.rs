//! JSON-RPC 2.0 as serde types: a [`Request`], a [`Response`] and its
//! [`RpcError`] object; a `POST` body parsed into one request or a batch
//! of them ([`parse`]); and positional-or-named parameters read by name
//! ([`Params`]).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON, but not a request object (or an empty batch).
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The method ran and failed (e.g. a reload refused); the message says why.
pub const FAILED: i64 = -32000;
/// No token, or not one of ours (HTTP 401).
pub const UNAUTHORIZED: i64 = -32001;
/// A tenant token asking for another tenant or a process-wide method
/// (HTTP 403 for a single request).
pub const FORBIDDEN: i64 = -32003;

/// A JSON-RPC error object (a `data` member sent by a peer is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    /// The HTTP status carrying this error as the answer to a single
    /// request: 401 and 403 for the auth errors, 200 otherwise (the error
    /// is in the body).
    pub fn http_status(&self) -> u16 {
        match self.code {
            UNAUTHORIZED => 401,
            FORBIDDEN => 403,
            _ => 200,
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// The `jsonrpc` member, which must be `"2.0"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V2;

impl Serialize for V2 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("2.0")
    }
}

impl<'de> Deserialize<'de> for V2 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<V2, D::Error> {
        match Value::deserialize(d)? {
            Value::String(v) if v == "2.0" => Ok(V2),
            other => Err(D::Error::custom(format!(
                "\"jsonrpc\" must be \"2.0\", not {other}"
            ))),
        }
    }
}

/// A request id: a number, a string or null.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Id {
    Number(serde_json::Number),
    String(String),
    Null,
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => Ok(Id::Number(n)),
            Value::String(s) => Ok(Id::String(s)),
            Value::Null => Ok(Id::Null),
            _ => Err(D::Error::custom("id must be a string, a number or null")),
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Id {
        Id::Number(n.into())
    }
}

/// A request: its method and parameters, and its id (`None` for a
/// notification, which gets no response; `Some(Id::Null)` is a request
/// whose id is null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: V2,
    pub method: String,
    /// An array or an object; left out or null, the empty array.
    #[serde(default = "no_params", deserialize_with = "params")]
    pub params: Value,
    #[serde(
        default,
        deserialize_with = "present_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
}

impl Request {
    /// A call of `method` with `params`, answered under `id`.
    pub fn new(method: impl Into<String>, params: Value, id: Id) -> Request {
        Request {
            jsonrpc: V2,
            method: method.into(),
            params,
            id: Some(id),
        }
    }
}

fn no_params() -> Value {
    Value::Array(Vec::new())
}

fn params<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(no_params()),
        p @ (Value::Array(_) | Value::Object(_)) => Ok(p),
        _ => Err(D::Error::custom("\"params\" must be an array or an object")),
    }
}

/// An `id` member that is there, even as null (absent is `None`, by
/// `default`).
fn present_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Id>, D::Error> {
    Id::deserialize(d).map(Some)
}

/// A response: a result or an error, under the request's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: V2,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub id: Id,
}

/// What a response carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Result(Value),
    Error(RpcError),
}

impl Response {
    /// The answer to the request `id` that succeeded with `result`.
    pub fn result(id: Id, result: Value) -> Response {
        Response {
            jsonrpc: V2,
            outcome: Outcome::Result(result),
            id,
        }
    }

    /// The answer to the request `id` (null when unknown) that failed.
    pub fn error(id: Id, error: RpcError) -> Response {
        Response {
            jsonrpc: V2,
            outcome: Outcome::Error(error),
            id,
        }
    }

    /// The HTTP status carrying this response as the answer to a single
    /// request ([`RpcError::http_status`]).
    pub fn http_status(&self) -> u16 {
        match &self.outcome {
            Outcome::Result(_) => 200,
            Outcome::Error(e) => e.http_status(),
        }
    }
}

/// A request read from a body, or the error response answering what
/// stood in its place.
pub type Entry = Result<Request, Response>;

/// What a `POST` body holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// One request object (or the error answering what was sent instead).
    Single(Entry),
    /// A non-empty array: each element read on its own, in order.
    Batch(Vec<Entry>),
}

/// Parse a body: one request or a batch. The error answers a body that is
/// not JSON, or an empty batch (one error, not an array).
pub fn parse(body: &[u8]) -> Result<Incoming, Response> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Response::error(
            Id::Null,
            RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
        )
    })?;
    match value {
        Value::Array(items) if items.is_empty() => Err(Response::error(
            Id::Null,
            RpcError::new(
                INVALID_REQUEST,
                "an empty batch: send a request object, or an array of them",
            ),
        )),
        Value::Array(items) => Ok(Incoming::Batch(items.into_iter().map(request).collect())),
        value => Ok(Incoming::Single(request(value))),
    }
}

/// One request object; the invalid-request error answers anything else,
/// under the id sent when it can be read (else null).
fn request(value: Value) -> Entry {
    let Value::Object(object) = value else {
        return Err(Response::error(
            Id::Null,
            RpcError::new(INVALID_REQUEST, "a request must be a JSON object"),
        ));
    };
    let id = object
        .get("id")
        .and_then(|id| Id::deserialize(id).ok())
        .unwrap_or(Id::Null);
    serde_json::from_value(Value::Object(object)).map_err(|e| {
        Response::error(
            id,
            RpcError::new(INVALID_REQUEST, format!("invalid request: {e}")),
        )
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
    use serde_json::json;

    /// A body holding one request: the request, or the id and error
    /// answering it.
    fn parse_one(body: &[u8]) -> Result<Request, (Value, RpcError)> {
        let failed = |r: Response| match r.outcome {
            Outcome::Error(e) => (serde_json::to_value(&r.id).unwrap(), e),
            Outcome::Result(v) => panic!("a result: {v}"),
        };
        match parse(body) {
            Ok(Incoming::Single(entry)) => entry.map_err(failed),
            Ok(Incoming::Batch(b)) => panic!("a batch: {b:?}"),
            Err(r) => Err(failed(r)),
        }
    }

    #[test]
    fn requests_are_checked_and_errors_keep_the_id() {
        let call = parse_one(br#"{"jsonrpc":"2.0","method":"core.version","id":7}"#).unwrap();
        assert_eq!(call.method, "core.version");
        assert_eq!(call.params, json!([]));
        assert_eq!(call.id, Some(Id::from(7)));
        let note = parse_one(br#"{"jsonrpc":"2.0","method":"m","params":{"a":1}}"#).unwrap();
        assert_eq!(note.id, None);
        assert_eq!(parse_one(b"{nope").unwrap_err().1.code, PARSE_ERROR);
        assert_eq!(parse_one(b"[]").unwrap_err().1.code, INVALID_REQUEST);
        let (id, e) = parse_one(br#"{"jsonrpc":"1.0","method":"m","id":"x"}"#).unwrap_err();
        assert_eq!((id, e.code), (json!("x"), INVALID_REQUEST));
        let (_, e) = parse_one(br#"{"jsonrpc":"2.0","method":"m","params":3,"id":1}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        let (_, e) = parse_one(br#"{"jsonrpc":"2.0","method":1,"id":1}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
    }

    #[test]
    fn a_null_id_is_a_request_and_a_bad_id_is_answered_under_null() {
        let call = parse_one(br#"{"jsonrpc":"2.0","method":"m","id":null}"#).unwrap();
        assert_eq!(call.id, Some(Id::Null));
        let (id, e) = parse_one(br#"{"jsonrpc":"2.0","method":"m","id":[1]}"#).unwrap_err();
        assert_eq!((id, e.code), (Value::Null, INVALID_REQUEST));
        assert!(e.message.contains("id must be"), "{}", e.message);
    }

    #[test]
    fn a_batch_reads_each_element_on_its_own() {
        let body = br#"[
            {"jsonrpc":"2.0","method":"a","id":1},
            {"jsonrpc":"2.0","method":"b"},
            1,
            {"jsonrpc":"2.0","id":"x"}
        ]"#;
        let Ok(Incoming::Batch(entries)) = parse(body) else {
            panic!("not a batch")
        };
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].as_ref().unwrap().method, "a");
        assert_eq!(entries[1].as_ref().unwrap().id, None);
        let errors: Vec<(Id, i64)> = entries[2..]
            .iter()
            .map(|e| match e {
                Err(Response {
                    outcome: Outcome::Error(err),
                    id,
                    ..
                }) => (id.clone(), err.code),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            errors,
            [
                (Id::Null, INVALID_REQUEST),
                (Id::String("x".into()), INVALID_REQUEST)
            ]
        );
        // A body that is not JSON at all is one parse error, batch or not.
        let r = parse(br#"[{"jsonrpc":"2.0","method":"a","id":1},"#).unwrap_err();
        assert!(matches!(
            r.outcome,
            Outcome::Error(RpcError {
                code: PARSE_ERROR,
                ..
            })
        ));
    }

    #[test]
    fn responses_serialize_as_the_spec_writes_them() {
        let ok = Response::result(Id::from(1), json!("pong"));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"jsonrpc": "2.0", "result": "pong", "id": 1})
        );
        let err = Response::error(Id::Null, RpcError::method_not_found("x"));
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"no method \"x\""},"id":null}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), err);
        let null_result = r#"{"jsonrpc":"2.0","result":null,"id":"a"}"#;
        assert_eq!(
            serde_json::from_str::<Response>(null_result).unwrap(),
            Response::result(Id::String("a".into()), Value::Null)
        );
        let request = Request::new("m", json!(["a"]), Id::from(1));
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"jsonrpc": "2.0", "method": "m", "params": ["a"], "id": 1})
        );
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
