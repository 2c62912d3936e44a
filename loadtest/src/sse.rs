//! An SSE client of the gateway, as a browser's EventSource plus `fetch`
//! would be: `GET /sse` read as a `text/event-stream`, ops sent with
//! `POST /sse/<conn>` and the `post_secret` of the stream's `hello`, to
//! this gateway or any other.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use serde_json::Value;

use crate::client::ClientError;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An open event stream and what its `hello` said.
pub struct SseClient {
    /// `http://host:port`.
    pub base: String,
    body: Incoming,
    buf: Vec<u8>,
    /// The last `id:` seen (`<conn>:<n>`), for a resume.
    pub last_id: Option<String>,
    /// From the `hello`.
    pub conn: Option<String>,
    pub post_secret: Option<String>,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// Events read past while waiting for another, oldest first.
    stash: std::collections::VecDeque<Value>,
}

impl SseClient {
    /// `GET <base><path_and_query>` with `headers`; the stream once the
    /// response's headers are in (any status but 200 is an error).
    pub async fn open(base: &str, path_and_query: &str, headers: &[(&str, &str)]) -> Result<Self, ClientError> {
        let host = base.strip_prefix("http://").ok_or_else(|| ClientError::Connect(format!("{base}: http:// only")))?;
        let connect = async {
            let stream = tokio::net::TcpStream::connect(host).await.map_err(|e| ClientError::Connect(e.to_string()))?;
            let mut send = crate::http::handshake(stream).await.map_err(|e| ClientError::Connect(e.to_string()))?;
            let mut req = hyper::Request::get(path_and_query).header(hyper::header::HOST, host);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let req = req.body(Empty::<Bytes>::new()).map_err(|e| ClientError::Connect(e.to_string()))?;
            let response = send.send_request(req).await.map_err(|e| ClientError::Connect(e.to_string()))?;
            if response.status() != 200 {
                return Err(ClientError::Http(response.status().as_u16()));
            }
            let headers = response.headers().clone();
            Ok(Self {
                base: base.to_owned(),
                body: response.into_body(),
                buf: Vec::new(),
                last_id: None,
                conn: None,
                post_secret: None,
                headers,
                stash: Default::default(),
            })
        };
        tokio::time::timeout(Duration::from_secs(10), connect).await.map_err(|_| ClientError::Timeout)?
    }

    /// The next event (comments skipped), within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<SseEvent, ClientError> {
        tokio::time::timeout(timeout, self.next_event_inner()).await.map_err(|_| ClientError::Timeout)?
    }

    async fn next_event_inner(&mut self) -> Result<SseEvent, ClientError> {
        loop {
            if let Some(e) = take_event(&mut self.buf) {
                if e.id.is_some() {
                    self.last_id = e.id.clone();
                }
                return Ok(e);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(ClientError::Connect(e.to_string())),
                None => return Err(ClientError::Closed(None)),
            }
        }
    }

    /// The next event's JSON (first those read past earlier); an
    /// `event: close` is `Err(Closed(code))`. A `hello` sets [`Self::conn`]
    /// and [`Self::post_secret`].
    pub async fn next_json(&mut self, timeout: Duration) -> Result<Value, ClientError> {
        if let Some(v) = self.stash.pop_front() {
            return Ok(v);
        }
        self.read_json(timeout).await
    }

    async fn read_json(&mut self, timeout: Duration) -> Result<Value, ClientError> {
        let e = self.next_event(timeout).await?;
        let v: Value =
            serde_json::from_str(&e.data).map_err(|err| ClientError::Connect(format!("{err}: {}", e.data)))?;
        if e.event.as_deref() == Some("close") {
            return Err(ClientError::Closed(v["code"].as_u64().map(|c| c as u16)));
        }
        if v["type"] == "hello" {
            self.conn = v["conn"].as_str().map(str::to_owned);
            self.post_secret = v["post_secret"].as_str().map(str::to_owned);
        }
        Ok(v)
    }

    /// The next event of `kind`; others stay for [`Self::next_json`].
    pub async fn next_of_type(&mut self, kind: &str, timeout: Duration) -> Result<Value, ClientError> {
        self.next_matching(|v| v["type"] == kind, timeout).await
    }

    /// The reply to the request `id`; other events stay for later.
    pub async fn reply(&mut self, id: u64, timeout: Duration) -> Result<Value, ClientError> {
        self.next_matching(|v| v["type"] == "reply" && v["id"] == id, timeout).await
    }

    async fn next_matching(&mut self, want: impl Fn(&Value) -> bool, timeout: Duration) -> Result<Value, ClientError> {
        if let Some(i) = self.stash.iter().position(&want) {
            return Ok(self.stash.remove(i).expect("found"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.read_json(left).await?;
            if want(&v) {
                return Ok(v);
            }
            self.stash.push_back(v);
        }
    }

    /// POSTs `ops` (one op or an array) for this stream's connection to the
    /// gateway at `base` (this one when `None`): the status and body.
    pub async fn post(&self, base: Option<&str>, ops: &Value) -> (u16, String) {
        let secret = self.post_secret.clone().unwrap_or_default();
        let conn = self.conn.clone().unwrap_or_default();
        post(base.unwrap_or(&self.base), &conn, &secret, ops.to_string().into_bytes()).await
    }
}

/// The next whole event in `buf`, taken off it (comments, the heartbeats,
/// are taken and skipped); `None` until one has arrived.
pub fn take_event(buf: &mut Vec<u8>) -> Option<SseEvent> {
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let block: Vec<u8> = buf.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&block);
        let mut e = SseEvent { id: None, event: None, data: String::new() };
        let mut any = false;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                e.id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                e.event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                if any {
                    e.data.push('\n');
                }
                e.data.push_str(v);
                any = true;
            }
        }
        if any {
            return Some(e);
        }
    }
    None
}

/// `POST <base>/sse/<conn>` with `Authorization: Bearer <secret>` and `body`.
pub async fn post(base: &str, conn: &str, secret: &str, body: Vec<u8>) -> (u16, String) {
    let Some(host) = base.strip_prefix("http://") else { return (0, "http:// only".into()) };
    let send = async {
        let mut send = crate::http::handshake(tokio::net::TcpStream::connect(host).await.ok()?).await.ok()?;
        let req = hyper::Request::post(format!("/sse/{conn}"))
            .header(hyper::header::HOST, host)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let response = send.send_request(req).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), send).await.ok().flatten().unwrap_or((0, "no answer".into()))
}
