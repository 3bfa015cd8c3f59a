//! The HTTP side: each `POST` body is one JSON-RPC request or a batch of
//! them, authenticated by its bearer token before it is even parsed, then
//! dispatched to the [`Methods`] the binary implements. HTTP handling
//! (hyper, with a bounded head and body, timeouts and a connection cap)
//! is `kemibox_metrics::http`'s.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use kemibox_metrics::http::{self as http, Limits, Peer, Request, Response};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::auth::{Caller, Keyring, Tokens};
use crate::rpc::{self, INVALID_REQUEST, Id, Incoming, RpcError};

/// The most a request body may take: requests are a method name and a
/// few short parameters (a batch, a few dozen of them).
pub const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; an operator tool needs few.
pub const MAX_CONNECTIONS: usize = 16;

/// The admin API's limits on a request.
pub fn limits() -> Limits {
    Limits {
        max_body: MAX_BODY,
        max_connections: MAX_CONNECTIONS,
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// What the binary serves: every method, given who is calling. A
/// tenant-scoped method checks [`Caller::check_tenant`] once it knows the
/// tenant; a process-wide one [`Caller::check_process`].
pub trait Methods: Send + Sync + 'static {
    fn call(
        &self,
        caller: &Caller,
        method: &str,
        params: &Value,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;
}

/// Bind the admin listener; the error names the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the admin API on {addr}: {e}"))
}

/// Answer JSON-RPC requests on `listener` until the task is dropped.
pub async fn serve<M: Methods>(listener: TcpListener, tokens: Tokens, methods: Arc<M>) {
    let keys = Arc::new(Keyring::from(&tokens));
    http::serve_with(listener, limits(), "admin", move |request| {
        let keys = keys.clone();
        let methods = methods.clone();
        async move { answer(&request, &keys, &*methods).await }
    })
    .await
}

/// The response to one HTTP request. A single request's auth errors are
/// HTTP 401 and 403; a batch is 200 with an answer per request (each
/// authorized on its own), or 204 when all were notifications.
pub async fn answer<M: Methods>(request: &Request, keys: &Keyring, methods: &M) -> Response {
    if request.method() != Method::POST {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &rpc::Response::error(
                Id::Null,
                RpcError::new(INVALID_REQUEST, "POST a JSON-RPC request"),
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let caller = match keys.authorize(authorization) {
        Ok(caller) => caller,
        Err(e) => {
            let peer = request.extensions().get::<Peer>().map(|p| p.0);
            tracing::warn!(peer = ?peer, "admin: {}", e.message);
            let mut r = json_response(StatusCode::UNAUTHORIZED, &rpc::Response::error(Id::Null, e));
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kemibox\""),
            );
            return r;
        }
    };
    match rpc::parse(request.body()) {
        Err(refused) | Ok(Incoming::Single(Err(refused))) => {
            json_response(StatusCode::OK, &refused)
        }
        Ok(Incoming::Single(Ok(call))) => match run(&caller, call, methods).await {
            None => no_content(),
            Some(answer) => {
                let status = StatusCode::from_u16(answer.http_status()).unwrap_or(StatusCode::OK);
                json_response(status, &answer)
            }
        },
        Ok(Incoming::Batch(entries)) => {
            // One after the other, in order: a batch may reload a script
            // and then list the versions.
            let mut answers = Vec::with_capacity(entries.len());
            for entry in entries {
                match entry {
                    Err(refused) => answers.push(refused),
                    Ok(call) => answers.extend(run(&caller, call, methods).await),
                }
            }
            if answers.is_empty() {
                no_content()
            } else {
                json_response(StatusCode::OK, &answers)
            }
        }
    }
}

/// Run one call for `caller`; its response, or `None` for a notification.
async fn run<M: Methods>(
    caller: &Caller,
    call: rpc::Request,
    methods: &M,
) -> Option<rpc::Response> {
    let outcome = methods.call(caller, &call.method, &call.params).await;
    match &outcome {
        Ok(_) => tracing::debug!(method = %call.method, caller = ?caller, "admin call"),
        Err(e) => {
            tracing::info!(method = %call.method, caller = ?caller, code = e.code, "admin call failed: {}", e.message)
        }
    }
    let id = call.id?;
    Some(match outcome {
        Ok(value) => rpc::Response::result(id, value),
        Err(e) => rpc::Response::error(id, e),
    })
}

/// Nothing to say: every request was a notification.
fn no_content() -> Response {
    http::response(StatusCode::NO_CONTENT, "application/json", "")
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(mut text) => {
            text.push(b'\n');
            http::response(status, "application/json", text)
        }
        Err(e) => {
            tracing::error!(error = %e, "admin: cannot serialize the answer");
            http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot serialize the answer\n",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{FORBIDDEN, METHOD_NOT_FOUND, PARSE_ERROR, Params};
    use http_body_util::BodyExt;
    use serde_json::json;

    /// `echo [tenant]` is tenant-scoped, `ping` process-wide.
    struct Echo;

    impl Methods for Echo {
        async fn call(
            &self,
            caller: &Caller,
            method: &str,
            params: &Value,
        ) -> Result<Value, RpcError> {
            match method {
                "ping" => {
                    caller.check_process(method)?;
                    Ok(json!("pong"))
                }
                "echo" => {
                    let tenant = Params::new(method, params, &["tenant"])?.required("tenant")?;
                    caller.check_tenant(method, &tenant)?;
                    Ok(json!({"tenant": tenant}))
                }
                _ => Err(RpcError::method_not_found(method)),
            }
        }
    }

    fn post(body: &str, token: Option<&str>) -> Request {
        let mut r = hyper::Request::post("/").header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(bytes::Bytes::from(body.to_string())).unwrap()
    }

    /// The status and the body of `r`.
    async fn read(r: Response) -> (u16, bytes::Bytes) {
        let status = r.status().as_u16();
        (status, r.into_body().collect().await.unwrap().to_bytes())
    }

    fn keys() -> Keyring {
        Keyring::from(&Tokens {
            admin: Some("top".into()),
            tenants: vec![("a".into(), "ta".into())],
        })
    }

    async fn exchange(body: &str, token: Option<&str>) -> (u16, Value) {
        let (code, body) = read(answer(&post(body, token), &keys(), &Echo).await).await;
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (code, value)
    }

    #[tokio::test]
    async fn auth_framing_and_scopes() {
        let ping = r#"{"jsonrpc":"2.0","method":"ping","id":1}"#;
        let (code, v) = exchange(ping, None).await;
        assert_eq!((code, &v["error"]["code"]), (401, &json!(-32001)));
        let (code, _) = exchange(ping, Some("nope")).await;
        assert_eq!(code, 401);
        let (code, v) = exchange(ping, Some("top")).await;
        assert_eq!(
            (code, v),
            (200, json!({"jsonrpc":"2.0","result":"pong","id":1}))
        );
        let (code, v) = exchange(ping, Some("ta")).await;
        assert_eq!((code, &v["error"]["code"]), (403, &json!(FORBIDDEN)));
        let own = r#"{"jsonrpc":"2.0","method":"echo","params":["a"],"id":"x"}"#;
        let (code, v) = exchange(own, Some("ta")).await;
        assert_eq!(
            (code, &v["result"]["tenant"], &v["id"]),
            (200, &json!("a"), &json!("x"))
        );
        let other = r#"{"jsonrpc":"2.0","method":"echo","params":{"tenant":"b"},"id":2}"#;
        let (code, _) = exchange(other, Some("ta")).await;
        assert_eq!(code, 403);
        let (_, v) = exchange(r#"{"jsonrpc":"2.0","method":"nope","id":3}"#, Some("top")).await;
        assert_eq!(v["error"]["code"], json!(METHOD_NOT_FOUND));
        let (_, v) = exchange("{", Some("top")).await;
        assert_eq!(
            (&v["error"]["code"], &v["id"]),
            (&json!(PARSE_ERROR), &Value::Null)
        );
        let (_, v) = exchange(
            r#"{"jsonrpc":"2.0","method":"echo","params":[],"id":4}"#,
            Some("top"),
        )
        .await;
        assert_eq!(v["error"]["code"], json!(-32602));
        let note = answer(
            &post(r#"{"jsonrpc":"2.0","method":"ping"}"#, Some("top")),
            &Keyring::from(&Tokens {
                admin: Some("top".into()),
                tenants: vec![],
            }),
            &Echo,
        )
        .await;
        let (code, body) = read(note).await;
        assert_eq!((code, body.len()), (204, 0));
    }

    /// [`Echo`], recording the methods it ran.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<String>>);

    impl Methods for Recording {
        async fn call(
            &self,
            caller: &Caller,
            method: &str,
            params: &Value,
        ) -> Result<Value, RpcError> {
            self.0.lock().unwrap().push(method.to_string());
            Echo.call(caller, method, params).await
        }
    }

    #[tokio::test]
    async fn a_batch_is_answered_in_order_each_request_authorized_on_its_own() {
        let methods = Recording::default();
        let batch = r#"[
            {"jsonrpc":"2.0","method":"echo","params":["a"],"id":"x"},
            {"foo":"boo"},
            {"jsonrpc":"2.0","method":"echo","params":["a"]},
            {"jsonrpc":"2.0","method":"ping","id":1},
            {"jsonrpc":"2.0","method":"echo","params":{"tenant":"b"},"id":2},
            {"jsonrpc":"2.0","method":"nope","id":3},
            {"jsonrpc":"2.0","method":"ping"}
        ]"#;
        let (code, body) = read(answer(&post(batch, Some("ta")), &keys(), &methods).await).await;
        // 200 although some were refused: each answer says for itself.
        assert_eq!(code, 200);
        let answers: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            answers,
            json!([
                {"jsonrpc": "2.0", "result": {"tenant": "a"}, "id": "x"},
                {"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": answers[1]["error"]["message"]}, "id": null},
                {"jsonrpc": "2.0", "error": {"code": FORBIDDEN, "message": answers[2]["error"]["message"]}, "id": 1},
                {"jsonrpc": "2.0", "error": {"code": FORBIDDEN, "message": answers[3]["error"]["message"]}, "id": 2},
                {"jsonrpc": "2.0", "error": {"code": METHOD_NOT_FOUND, "message": "no method \"nope\""}, "id": 3},
            ])
        );
        assert!(
            answers[3]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot act on tenant b"),
            "{answers}"
        );
        // The notifications ran too (the refused one as far as its check).
        assert_eq!(
            *methods.0.lock().unwrap(),
            ["echo", "echo", "ping", "echo", "nope", "ping"]
        );

        // With the process token the same requests pass.
        let (_, body) = read(answer(&post(batch, Some("top")), &keys(), &Echo).await).await;
        let answers: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            answers[2],
            json!({"jsonrpc": "2.0", "result": "pong", "id": 1})
        );
        assert_eq!(answers[3]["result"], json!({"tenant": "b"}));

        // Only notifications: nothing to answer.
        let notes = r#"[{"jsonrpc":"2.0","method":"ping"},{"jsonrpc":"2.0","method":"echo","params":["a"]}]"#;
        let (code, body) = read(answer(&post(notes, Some("top")), &keys(), &Echo).await).await;
        assert_eq!((code, body.len()), (204, 0));
        // An empty batch is one error, not an array; elements that are not
        // objects are each an error.
        let (code, v) = exchange("[]", Some("top")).await;
        assert_eq!(
            (code, &v["error"]["code"], &v["id"]),
            (200, &json!(INVALID_REQUEST), &Value::Null)
        );
        let (_, v) = exchange("[1, 2]", Some("top")).await;
        assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .all(|a| a["error"]["code"] == json!(INVALID_REQUEST))
        );
        // A batch without a valid token is refused whole.
        let (code, v) = exchange(batch, Some("wrong")).await;
        assert_eq!((code, &v["error"]["code"]), (401, &json!(-32001)));
    }

    #[tokio::test]
    async fn only_post_is_served() {
        let mut get = post("", Some("top"));
        *get.method_mut() = Method::GET;
        let r = answer(&get, &Keyring::from(&Tokens::default()), &Echo).await;
        assert_eq!(r.status().as_u16(), 405);
        assert_eq!(r.headers().get(header::ALLOW).unwrap(), "POST");
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_a_socket_with_the_client() {
        use crate::client::{CallError, Endpoint, call};
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tokens = Tokens {
            admin: Some("top".into()),
            tenants: vec![],
        };
        let server = tokio::spawn(serve(listener, tokens, Arc::new(Echo)));
        let endpoint = Endpoint::for_listen(addr);
        let t = Duration::from_secs(5);
        let ok = call(&endpoint, Some("top"), "echo", json!(["a"]), t).await;
        let denied = call(&endpoint, None, "ping", json!([]), t).await;
        // A body past the limit is refused before it is read.
        let big = call(
            &endpoint,
            Some("top"),
            "echo",
            json!(["x".repeat(MAX_BODY)]),
            t,
        )
        .await;
        let results = (ok, denied, big);
        assert_eq!(results.0.unwrap(), json!({"tenant": "a"}));
        match results.1 {
            Err(CallError::Rpc(e)) => assert_eq!(e.code, rpc::UNAUTHORIZED),
            other => panic!("{other:?}"),
        }
        match results.2 {
            Err(CallError::Transport(why)) => assert!(why.contains("HTTP 413"), "{why}"),
            other => panic!("{other:?}"),
        }
        server.abort();
    }
}
