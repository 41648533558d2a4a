//! JSON-RPC 2.0 framing, shared by HTTP and WebSocket: a body is one request or a batch
//! (bounded before anything is allocated per element), each request is checked for the
//! `jsonrpc`/`id`/`method` rules, and answers are written straight into one output buffer,
//! bounded by the response limit.

use super::error::{RpcError, INVALID_REQUEST, PARSE_ERROR, RESPONSE_TOO_LARGE};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// A JSON array whose elements are kept as raw slices of the input.
pub(crate) struct BoundedSeq<'a> {
    max: usize,
    too_long: Cell<bool>,
    _input: std::marker::PhantomData<&'a ()>,
}

/// Why an array could not be split.
#[derive(Debug)]
pub(crate) enum SeqError {
    /// More than the allowed number of elements.
    TooLong,
    Json(serde_json::Error),
}

impl fmt::Display for SeqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => f.write_str("too many elements"),
            Self::Json(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// Splits the JSON array `text` into at most `max` raw elements; stops reading as soon as
/// there are more, so a huge array costs no more than `max` slots.
pub(crate) fn bounded_array(text: &str, max: usize) -> Result<Vec<&RawValue>, SeqError> {
    let seed = BoundedSeq {
        max,
        too_long: Cell::new(false),
        _input: std::marker::PhantomData,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    match (&seed)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(items) => Ok(items),
        Err(_) if seed.too_long.get() => Err(SeqError::TooLong),
        Err(e) => Err(SeqError::Json(e)),
    }
}

impl<'de> DeserializeSeed<'de> for &BoundedSeq<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for &BoundedSeq<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                self.too_long.set(true);
                return Err(serde::de::Error::custom("too many elements"));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// A body: one request or a batch of raw requests.
pub(crate) enum Body<'a> {
    Single(&'a RawValue),
    Batch(Vec<&'a RawValue>),
}

/// Why a body as a whole is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Not JSON.
    Parse(String),
    EmptyBatch,
    /// More requests than the limit (the limit).
    BatchTooLarge(usize),
}

impl BodyError {
    pub(crate) fn to_rpc(&self) -> RpcError {
        match self {
            Self::Parse(e) => RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
            Self::EmptyBatch => RpcError::new(INVALID_REQUEST, "empty batch"),
            Self::BatchTooLarge(max) => RpcError::new(
                INVALID_REQUEST,
                format!("batch too large: the limit is {max} requests"),
            ),
        }
    }
}

/// Splits a body into one request or a batch of at most `max_batch`.
pub(crate) fn split_body(text: &str, max_batch: usize) -> Result<Body<'_>, BodyError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return match bounded_array(trimmed, max_batch) {
            Ok(items) if items.is_empty() => Err(BodyError::EmptyBatch),
            Ok(items) => Ok(Body::Batch(items)),
            Err(SeqError::TooLong) => Err(BodyError::BatchTooLarge(max_batch)),
            Err(SeqError::Json(e)) => Err(BodyError::Parse(e.to_string())),
        };
    }
    serde_json::from_str::<&RawValue>(trimmed)
        .map(Body::Single)
        .map_err(|e| BodyError::Parse(e.to_string()))
}

/// One request, borrowed from the body.
pub(crate) struct Request<'a> {
    /// `None` for a notification (no `id` member): it gets no answer.
    pub id: Option<&'a RawValue>,
    pub method: Cow<'a, str>,
    pub params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// Maps a present member (even `null`) to `Some`, so that `"id": null` is told from no id.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Checks one raw request. On error, also returns the id to answer with (`null` if unknown).
pub(crate) fn parse_request(raw: &RawValue) -> Result<Request<'_>, (RpcError, Option<&RawValue>)> {
    let invalid = |msg: &str| RpcError::new(INVALID_REQUEST, msg);
    let wire: WireRequest<'_> =
        serde_json::from_str(raw.get()).map_err(|_| (invalid("invalid request"), None))?;
    let id = wire.id;
    if let Some(id) = id {
        let first = id.get().as_bytes().first().copied();
        if matches!(first, Some(b'{') | Some(b'[') | Some(b't') | Some(b'f')) {
            return Err((
                invalid("invalid request: id must be a number, string or null"),
                None,
            ));
        }
    }
    if wire.jsonrpc.as_deref() != Some("2.0") {
        return Err((invalid("invalid request: jsonrpc must be \"2.0\""), id));
    }
    let Some(method) = wire.method.filter(|m| !m.is_empty()) else {
        return Err((invalid("invalid request: no method"), id));
    };
    if let Some(params) = wire.params {
        let first = params.get().as_bytes().first().copied();
        if !matches!(first, Some(b'[') | Some(b'{')) {
            return Err((
                invalid("invalid request: params must be an array or object"),
                id,
            ));
        }
    }
    Ok(Request {
        id,
        method,
        params: wire.params,
    })
}

const NULL_ID: &str = "null";

/// Appends `{"jsonrpc":"2.0","id":…,"result":…}`.
pub(crate) fn write_result(out: &mut Vec<u8>, id: Option<&RawValue>, result: &RawValue) {
    write_head(out, id);
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result.get().as_bytes());
    out.push(b'}');
}

/// Appends `{"jsonrpc":"2.0","id":…,"error":{…}}`.
pub(crate) fn write_error(out: &mut Vec<u8>, id: Option<&RawValue>, error: &RpcError) {
    write_head(out, id);
    out.extend_from_slice(b",\"error\":");
    // Serialising a struct of a number and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, error);
    out.push(b'}');
}

fn write_head(out: &mut Vec<u8>, id: Option<&RawValue>) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.map_or(NULL_ID, RawValue::get).as_bytes());
}

/// A complete response for a body that failed as a whole.
pub(crate) fn error_body(error: &RpcError) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_error(&mut out, None, error);
    out
}

/// A value as raw JSON (for results).
pub(crate) fn to_raw<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, RpcError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| RpcError::internal(format!("cannot encode result: {e}")))
}

/// Collects the answers of a batch (`[a,b,…]`) or the one answer of a single request, and
/// turns answers past the response limit into small errors.
pub(crate) struct ResponseWriter {
    out: Vec<u8>,
    batch: bool,
    answers: usize,
    limit: usize,
}

impl ResponseWriter {
    pub(crate) fn new(batch: bool, limit: usize) -> Self {
        let mut out = Vec::with_capacity(256);
        if batch {
            out.push(b'[');
        }
        Self {
            out,
            batch,
            answers: 0,
            limit,
        }
    }

    /// Whether the output already passed the limit: further answers will be errors.
    pub(crate) fn full(&self) -> bool {
        self.out.len() > self.limit
    }

    /// Adds the answer to a request with `id` (nothing for notifications).
    pub(crate) fn answer(
        &mut self,
        id: Option<&RawValue>,
        notification: bool,
        result: Result<&RawValue, &RpcError>,
    ) {
        if notification {
            return;
        }
        if self.batch && self.answers > 0 {
            self.out.push(b',');
        }
        self.answers += 1;
        if self.full() {
            let e = RpcError::new(RESPONSE_TOO_LARGE, "response too large");
            write_error(&mut self.out, id, &e);
            return;
        }
        match result {
            Ok(r) => write_result(&mut self.out, id, r),
            Err(e) => write_error(&mut self.out, id, e),
        }
    }

    /// The response body; `None` when every request was a notification.
    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        if self.answers == 0 {
            return None;
        }
        if self.batch {
            self.out.push(b']');
        }
        Some(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_before_parsing_elements() {
        let body = format!("[{}]", vec!["{}"; 101].join(","));
        assert!(matches!(
            split_body(&body, 100),
            Err(BodyError::BatchTooLarge(100))
        ));
        assert!(matches!(split_body(&body, 101), Ok(Body::Batch(v)) if v.len() == 101));
        assert!(matches!(split_body("[]", 100), Err(BodyError::EmptyBatch)));
        assert!(matches!(split_body("[1,", 100), Err(BodyError::Parse(_))));
        assert!(matches!(
            split_body("{\"a\":", 100),
            Err(BodyError::Parse(_))
        ));
    }

    #[test]
    fn requests_follow_json_rpc_2() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        let ok = raw(r#"{"jsonrpc":"2.0","id":7,"method":"eth_chainId","params":[]}"#);
        let r = parse_request(&ok).map_err(|e| e.0).unwrap();
        assert_eq!(r.id.map(RawValue::get), Some("7"));
        assert_eq!(r.method, "eth_chainId");
        let null_id = raw(r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#);
        assert_eq!(
            parse_request(&null_id)
                .map_err(|e| e.0)
                .unwrap()
                .id
                .map(RawValue::get),
            Some("null")
        );
        let notification = raw(r#"{"jsonrpc":"2.0","method":"m"}"#);
        assert!(parse_request(&notification)
            .map_err(|e| e.0)
            .unwrap()
            .id
            .is_none());
        for bad in [
            r#"{"id":1,"method":"m"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":3}"#,
            r#"17"#,
        ] {
            assert!(parse_request(&raw(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn writer_frames_batches_and_caps_size() {
        let result = RawValue::from_string("\"0x1\"".to_string()).unwrap();
        let id = RawValue::from_string("1".to_string()).unwrap();
        let mut w = ResponseWriter::new(true, 30);
        w.answer(Some(&id), false, Ok(&result));
        w.answer(None, true, Ok(&result));
        w.answer(Some(&id), false, Ok(&result));
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["result"], "0x1");
        assert_eq!(v[1]["error"]["code"], RESPONSE_TOO_LARGE);
        assert_eq!(v.as_array().unwrap().len(), 2);
        let w = ResponseWriter::new(false, 60);
        assert!(w.finish().is_none());
    }
}
