//! JSON-RPC 2.0 over HTTP the way Agave's `jsonrpc-http-server` 18 frames it: POST only, JSON
//! content type required, 50 KiB body limit, errors inside a 200 response, batches answered as
//! arrays, notifications (no `id`) answered with nothing, and jsonrpc-core's parameter messages.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// Agave's `MAX_REQUEST_BODY_SIZE`.
pub const MAX_BODY: usize = 50 * 1024;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn method_not_found() -> Self {
        Self::new(-32601, "Method not found")
    }

    /// jsonrpc-core's message for params that fail to deserialize.
    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(-32602, format!("Invalid params: {detail}."))
    }

    /// The error object in jsonrpc-core's field order: `code`, `message`, then `data`.
    fn to_text(&self) -> String {
        let mut out = format!(
            r#"{{"code":{},"message":{}"#,
            self.code,
            Value::String(self.message.clone())
        );
        if let Some(data) = &self.data {
            out.push_str(&format!(r#","data":{data}"#));
        }
        out.push('}');
        out
    }
}

/// The `params` of a request as jsonrpc-core sees them.
#[derive(Clone, Debug)]
pub enum Params {
    None,
    Array(Vec<Value>),
    Object(Map<String, Value>),
}

impl Params {
    fn from_request(request: &Map<String, Value>) -> Result<Self, RpcError> {
        match request.get("params") {
            None | Some(Value::Null) => Ok(Params::None),
            Some(Value::Array(a)) => Ok(Params::Array(a.clone())),
            Some(Value::Object(o)) => Ok(Params::Object(o.clone())),
            Some(_) => Err(RpcError::new(-32600, "Invalid request")),
        }
    }

    /// For methods without params (`getIdentity`, `contactInfo`, …).
    pub fn expect_none(&self) -> Result<(), RpcError> {
        match self {
            Params::None => Ok(()),
            Params::Array(a) if a.is_empty() => Ok(()),
            other => Err(RpcError {
                code: -32602,
                message: "Invalid parameters: No parameters were expected".into(),
                data: Some(Value::String(other.debug())),
            }),
        }
    }

    /// For methods taking one optional config object (`getSlot`, `getVoteAccounts`, …).
    pub fn optional_config(&self) -> Result<Option<Map<String, Value>>, RpcError> {
        let items = match self {
            Params::None => return Ok(None),
            Params::Object(_) => return Err(RpcError::new(-32602, "`params` should be an array")),
            Params::Array(a) => a,
        };
        match items.as_slice() {
            [] | [Value::Null] => Ok(None),
            [Value::Object(o)] => Ok(Some(o.clone())),
            [other] => Err(RpcError::invalid_params(format!(
                "invalid type: {}, expected struct config",
                describe(other)
            ))),
            more => Err(RpcError {
                code: -32602,
                message: "Invalid parameters: Expected from 0 to 1 parameters.".into(),
                data: Some(Value::String(format!("\"Got: {}\"", more.len()))),
            }),
        }
    }

    /// For methods with a fixed tuple of params (the admin RPC's `setIdentity`, …), checked as
    /// serde checks a tuple: the exact count, with jsonrpc-core's messages.
    pub fn tuple(&self, size: usize) -> Result<Vec<Value>, RpcError> {
        let items = match self {
            Params::None => Vec::new(),
            Params::Array(a) => a.clone(),
            Params::Object(_) => return Err(RpcError::new(-32602, "`params` should be an array")),
        };
        if items.len() < size {
            return Err(RpcError::invalid_params(format!(
                "invalid length {}, expected a tuple of size {size}",
                items.len()
            )));
        }
        if items.len() > size {
            return Err(RpcError::invalid_params(format!(
                "invalid length {}, expected fewer elements in array",
                items.len()
            )));
        }
        Ok(items)
    }

    /// For methods with a required first param and optional ones after it (`getAccountInfo`).
    pub fn at_least(&self, required: usize) -> Result<Vec<Value>, RpcError> {
        let items = match self {
            Params::None => Vec::new(),
            Params::Array(a) => a.clone(),
            Params::Object(_) => return Err(RpcError::new(-32602, "`params` should be an array")),
        };
        if items.len() < required {
            return Err(RpcError::invalid_params(format!(
                "invalid length {}, expected at least {required} params",
                items.len()
            )));
        }
        Ok(items)
    }

    fn debug(&self) -> String {
        match self {
            Params::None => "None".into(),
            Params::Array(a) => format!("Array({:?})", a),
            Params::Object(o) => format!("Map({:?})", o),
        }
    }
}

/// How serde names a JSON value's type in "invalid type" messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

/// Answers one parsed request object; `None` for a notification. The frame keeps jsonrpc-core's
/// field order (`jsonrpc`, `result`/`error`, `id`); results are maps with sorted keys.
pub fn answer_one<F>(request: &Value, dispatch: &mut F) -> Option<String>
where
    F: FnMut(&str, &Params) -> Result<Value, RpcError>,
{
    let Some(obj) = request.as_object() else {
        return Some(error_frame(
            Value::Null,
            &RpcError::new(-32600, "Invalid request"),
        ));
    };
    let id = obj.get("id").cloned();
    match obj.get("jsonrpc") {
        None => {
            // jsonrpc-core answers without a "jsonrpc" key here.
            let id = id.unwrap_or(Value::Null);
            let e = RpcError::new(-32600, "Unsupported JSON-RPC protocol version");
            return Some(format!(r#"{{"error":{},"id":{id}}}"#, e.to_text()));
        }
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => {
            return Some(error_frame(
                id.unwrap_or(Value::Null),
                &RpcError::new(-32600, "Invalid request"),
            ))
        }
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.clone(),
        _ => {
            return Some(error_frame(
                id.unwrap_or(Value::Null),
                &RpcError::new(-32600, "Invalid request"),
            ))
        }
    };
    let result = Params::from_request(obj).and_then(|p| dispatch(&method, &p));
    let id = id?;
    Some(match result {
        Ok(value) => format!(r#"{{"jsonrpc":"2.0","result":{value},"id":{id}}}"#),
        Err(e) => error_frame(id, &e),
    })
}

pub fn error_frame(id: Value, e: &RpcError) -> String {
    format!(r#"{{"jsonrpc":"2.0","error":{},"id":{id}}}"#, e.to_text())
}

/// Answers a whole body: a request or a batch. `None` when nothing is to be sent back.
pub fn answer_body<F>(body: &[u8], mut dispatch: F) -> Option<String>
where
    F: FnMut(&str, &Params) -> Result<Value, RpcError>,
{
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Some(error_frame(
                Value::Null,
                &RpcError::new(-32700, "Parse error"),
            ))
        }
    };
    match parsed {
        Value::Array(batch) => {
            let answers: Vec<String> = batch
                .iter()
                .filter_map(|r| answer_one(r, &mut dispatch))
                .collect();
            (!answers.is_empty()).then(|| format!("[{}]", answers.join(",")))
        }
        single => answer_one(&single, &mut dispatch),
    }
}

/// Checks the HTTP framing; on success returns nothing, else the response Agave's server gives.
pub fn check_http(method: &Method, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let text = |status: StatusCode, msg: &'static str| {
        Some((status, [(header::CONTENT_TYPE, "text/plain")], msg).into_response())
    };
    if method != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Used HTTP Method is not allowed. POST or OPTIONS is required\n",
        );
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
        .is_some_and(|v| {
            matches!(
                v.as_str(),
                "application/json"
                    | "application/json; charset=utf-8"
                    | "application/json;charset=utf-8"
            )
        });
    if !json_type {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Supplied content type is not allowed. Content-Type: application/json is required\n",
        );
    }
    if body.len() > MAX_BODY {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body size exceeds allowed maximum",
        );
    }
    None
}

/// A JSON-RPC answer as Agave's HTTP server sends it.
pub fn json_response(answer: Option<String>) -> Response {
    match answer {
        None => (StatusCode::OK, "").into_response(),
        Some(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            format!("{v}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn echo(method: &str, params: &Params) -> Result<Value, RpcError> {
        match method {
            "none" => params.expect_none().map(|_| json!("ok")),
            "config" => params.optional_config().map(|c| json!(c.is_some())),
            "pair" => params.tuple(2).map(Value::Array),
            _ => Err(RpcError::method_not_found()),
        }
    }

    fn call(body: &str) -> Option<String> {
        answer_body(body.as_bytes(), echo)
    }

    #[test]
    fn jsonrpc_core_messages() {
        assert_eq!(
            call(r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#).unwrap(),
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":1}"#
        );
        assert_eq!(
            call("{not json").unwrap(),
            r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
        );
        assert!(
            call(r#"{"jsonrpc":"2.0","id":1,"method":"pair","params":[1]}"#)
                .unwrap()
                .contains("Invalid params: invalid length 1, expected a tuple of size 2.")
        );
        assert!(
            call(r#"{"jsonrpc":"2.0","id":1,"method":"pair","params":[1,2,3]}"#)
                .unwrap()
                .contains("Invalid params: invalid length 3, expected fewer elements in array.")
        );
        assert!(
            call(r#"{"jsonrpc":"2.0","id":1,"method":"config","params":[{},{}]}"#)
                .unwrap()
                .contains(r#""data":"\"Got: 2\"""#)
        );
        assert!(
            call(r#"{"jsonrpc":"2.0","id":1,"method":"none","params":[1]}"#)
                .unwrap()
                .contains("No parameters were expected")
        );
        assert!(call(r#"{"id":1,"method":"none"}"#)
            .unwrap()
            .contains("Unsupported JSON-RPC protocol version"));
    }

    #[test]
    fn batches_and_notifications() {
        assert_eq!(call(r#"{"jsonrpc":"2.0","method":"none"}"#), None);
        let batch = call(
            r#"[{"jsonrpc":"2.0","id":1,"method":"none"},{"jsonrpc":"2.0","method":"none"},{"jsonrpc":"2.0","id":2,"method":"config","params":[{"a":1}]}]"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&batch).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["result"], true);
        assert_eq!(call("[]"), None);
    }
}
