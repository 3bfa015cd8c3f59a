//! The HTTP side: each `POST` body is one JSON-RPC request, authenticated
//! by its bearer token before it is even parsed, then dispatched to the
//! [`Methods`] the binary implements. HTTP handling (bounded head and
//! body, timeouts, connection cap) is `kemibox_metrics::http`'s.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kemibox_metrics::http::{Limits, Request, Response};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::auth::{Caller, Tokens};
use crate::rpc::{self, INVALID_REQUEST, RpcError};

/// The most a request body may take: requests are a method name and a
/// few short parameters.
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
    let tokens = Arc::new(tokens);
    kemibox_metrics::http::serve_with(listener, limits(), "admin", move |request| {
        let tokens = tokens.clone();
        let methods = methods.clone();
        async move { answer(&request, &tokens, &*methods).await }
    })
    .await
}

/// The response to one HTTP request.
pub async fn answer<M: Methods>(request: &Request, tokens: &Tokens, methods: &M) -> Response {
    if request.method != "POST" {
        let mut r = json_response(
            405,
            "Method Not Allowed",
            &rpc::error(
                Value::Null,
                &RpcError::new(INVALID_REQUEST, "POST one JSON-RPC request"),
            ),
        );
        r.headers.push(("Allow".into(), "POST".into()));
        return r;
    }
    let caller = match tokens.authorize(request.header("authorization")) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::warn!(peer = ?request.peer, "admin: {}", e.message);
            let mut r = json_response(401, "Unauthorized", &rpc::error(Value::Null, &e));
            r.headers
                .push(("WWW-Authenticate".into(), "Bearer realm=\"kemibox\"".into()));
            return r;
        }
    };
    let call = match rpc::parse(&request.body) {
        Ok(call) => call,
        Err((id, e)) => return json_response(200, "OK", &rpc::error(id, &e)),
    };
    let outcome = methods.call(&caller, &call.method, &call.params).await;
    match &outcome {
        Ok(_) => tracing::debug!(method = %call.method, caller = ?caller, "admin call"),
        Err(e) => {
            tracing::info!(method = %call.method, caller = ?caller, code = e.code, "admin call failed: {}", e.message)
        }
    }
    let Some(id) = call.id else {
        // A notification: done, nothing to say.
        return Response {
            content_type: "application/json".into(),
            ..Response::text(204, "No Content", "")
        };
    };
    match outcome {
        Ok(value) => json_response(200, "OK", &rpc::result(id, value)),
        Err(e) => {
            let (code, reason) = e.http_status();
            json_response(code, reason, &rpc::error(id, &e))
        }
    }
}

fn json_response(code: u16, reason: &str, body: &Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    Response {
        content_type: "application/json".into(),
        ..Response::text(code, reason, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{FORBIDDEN, METHOD_NOT_FOUND, PARSE_ERROR, Params};
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
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(t) = token {
            headers.push(("Authorization".into(), format!("Bearer {t}")));
        }
        Request {
            method: "POST".into(),
            path: "/".into(),
            headers,
            body: body.as_bytes().to_vec(),
            peer: None,
        }
    }

    async fn exchange(body: &str, token: Option<&str>) -> (u16, Value) {
        let tokens = Tokens {
            admin: Some("top".into()),
            tenants: vec![("a".into(), "ta".into())],
        };
        let r = answer(&post(body, token), &tokens, &Echo).await;
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.code, value)
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
            &Tokens {
                admin: Some("top".into()),
                tenants: vec![],
            },
            &Echo,
        )
        .await;
        assert_eq!((note.code, note.body.len()), (204, 0));
    }

    #[tokio::test]
    async fn only_post_is_served() {
        let mut get = post("", Some("top"));
        get.method = "GET".into();
        let r = answer(&get, &Tokens::default(), &Echo).await;
        assert_eq!(r.code, 405);
        assert!(r.headers.contains(&("Allow".into(), "POST".into())));
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
        let results = tokio::task::spawn_blocking(move || {
            let t = Duration::from_secs(5);
            let ok = call(&endpoint, Some("top"), "echo", json!(["a"]), t);
            let denied = call(&endpoint, None, "ping", json!([]), t);
            // A body past the limit is refused before it is read.
            let big = call(
                &endpoint,
                Some("top"),
                "echo",
                json!(["x".repeat(MAX_BODY)]),
                t,
            );
            (ok, denied, big)
        })
        .await
        .unwrap();
        assert_eq!(results.0.unwrap(), json!({"tenant": "a"}));
        match results.1 {
            Err(CallError::Rpc(e)) => assert_eq!(e.code, crate::rpc::UNAUTHORIZED),
            other => panic!("{other:?}"),
        }
        match results.2 {
            Err(CallError::Transport(why)) => assert!(why.contains("HTTP 413"), "{why}"),
            other => panic!("{other:?}"),
        }
        server.abort();
    }
}
