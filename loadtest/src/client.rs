//! A WebSocket client for Switchboard, for tests and load scenarios.
//!
//! Built on fastwebsockets' client side, so the gateway's framing is checked
//! by an implementation other than its own. It can behave well (answer pings,
//! read everything) or badly on purpose: never pong, never read, send raw or
//! malformed frames. Protocol helpers send requests with ids and wait for the
//! matching reply while keeping every other event for later. (One file past
//! 400 lines: the client and its waiting helpers share one stash of events,
//! and splitting them would only spread that state.)

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketRead, WebSocketWrite};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use proto::pb;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, Mutex};

type Io = TokioIo<Upgraded>;
type Writer = Arc<Mutex<WebSocketWrite<WriteHalf<Io>>>>;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `ws://host:port/path?query`, or `wss://…` with [`tls`](Self::tls).
    pub url: String,
    /// The TLS settings (trusted CAs) for a `wss://` URL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Sent as `Authorization: Bearer …`.
    pub bearer: Option<String>,
    /// Offered subprotocols, in order of preference.
    pub protocols: Vec<String>,
    /// Sent as `Origin`.
    pub origin: Option<String>,
    /// More request headers (a `Cookie`, say).
    pub headers: Vec<(String, String)>,
    /// Answer pings (a well-behaved client does).
    pub auto_pong: bool,
    /// Read at all; a client that does not read lets its receive buffer fill.
    pub read: bool,
    /// Local address to connect from (spreads load over 127.0.0.x).
    pub source: Option<IpAddr>,
    /// Bytes sent first on the TCP connection, before TLS (a PROXY
    /// protocol header, as a load balancer would send).
    pub preface: Option<Vec<u8>>,
    /// The socket's receive buffer (SO_RCVBUF), to play a client on a slow link.
    pub recv_buffer: Option<u32>,
    /// Bound on TCP connect plus handshake.
    pub timeout: Duration,
}

impl ConnectOptions {
    /// A well-behaved client for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            bearer: None,
            protocols: Vec::new(),
            origin: None,
            headers: Vec::new(),
            auto_pong: true,
            read: true,
            source: None,
            preface: None,
            recv_buffer: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What arrived from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Text(String),
    Binary(Bytes),
    Ping,
    Pong,
    /// A close frame, with its code if any.
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Gone,
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(String),
    /// The server answered the upgrade with this HTTP status.
    #[error("upgrade refused with HTTP {0}")]
    Http(u16),
    #[error("timed out")]
    Timeout,
    /// The server closed (with this code, if it sent one).
    #[error("closed ({0:?})")]
    Closed(Option<u16>),
    #[error("unexpected frame: {0}")]
    Unexpected(String),
}

/// A connected client.
pub struct Client {
    writer: Writer,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    /// Events set aside while waiting for a reply, with the JSON of text
    /// frames already parsed (so waiting stays linear in what arrived).
    stash: VecDeque<(Incoming, Option<Value>)>,
    protocol: Option<String>,
    next_id: u64,
    /// The read half, kept unread when `read` is false.
    _unread: Option<std::sync::Mutex<WebSocketRead<ReadHalf<Io>>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// While true, the reader reads nothing (a client that stalls for a while).
    paused: tokio::sync::watch::Sender<bool>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(r) = &self.reader {
            r.abort();
        }
    }
}

/// Runs hyper's handshake futures on tokio (the WebSocket upgrade needs an executor).
pub(crate) struct Spawn;

impl<F> hyper::rt::Executor<F> for Spawn
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// Splits `ws://host:port/rest` (or `wss://`) into the address, the
/// request target and whether it is TLS.
fn parse_url(url: &str) -> Result<(String, String, bool), ClientError> {
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(ClientError::Connect(format!("not a ws:// or wss:// URL: {url}"))),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_owned(), path.to_owned(), tls))
}

/// The TLS handshake with `host` (`name:port`, the name checked against
/// the server's certificate) over a connected `stream`.
pub(crate) async fn tls_connect(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    stream: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
    let name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| ClientError::Connect(format!("server name {name}: {e}")))?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(|e| ClientError::Connect(format!("TLS: {e}")))
}

/// A TLS client configuration trusting the CA certificates in `pem`.
pub fn tls_trusting(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Client {
    /// Connects and completes the WebSocket handshake.
    pub async fn connect(opts: ConnectOptions) -> Result<Self, ClientError> {
        tokio::time::timeout(opts.timeout, Self::connect_inner(&opts)).await.map_err(|_| ClientError::Timeout)?
    }

    async fn connect_inner(opts: &ConnectOptions) -> Result<Self, ClientError> {
        let (host, target, tls) = parse_url(&opts.url)?;
        let addr: SocketAddr = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .next()
            .ok_or_else(|| ClientError::Connect(format!("no address for {host}")))?;
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(ip) = opts.source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| ClientError::Connect(e.to_string()))?;
        }
        if let Some(size) = opts.recv_buffer {
            socket.set_recv_buffer_size(size).map_err(|e| ClientError::Connect(e.to_string()))?;
        }
        let mut stream = socket.connect(addr).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        if let Some(preface) = &opts.preface {
            stream.write_all(preface).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        }
        if tls {
            let config = opts.tls.as_ref().ok_or_else(|| ClientError::Connect("wss:// needs a CA (tls)".into()))?;
            let stream = tls_connect(config, &host, stream).await?;
            return Self::upgrade(opts, &host, &target, stream).await;
        }
        Self::upgrade(opts, &host, &target, stream).await
    }

    /// The WebSocket handshake over a connected `stream`.
    async fn upgrade<S>(opts: &ConnectOptions, host: &str, target: &str, stream: S) -> Result<Self, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(target)
            .header("Host", host)
            .header("Upgrade", "websocket")
            .header("Connection", "upgrade")
            .header("Sec-WebSocket-Key", fastwebsockets::handshake::generate_key())
            .header("Sec-WebSocket-Version", "13");
        if let Some(t) = &opts.bearer {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if !opts.protocols.is_empty() {
            req = req.header("Sec-WebSocket-Protocol", opts.protocols.join(", "));
        }
        if let Some(o) = &opts.origin {
            req = req.header("Origin", o);
        }
        for (name, value) in &opts.headers {
            req = req.header(name, value);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut ws, response) = match fastwebsockets::handshake::client(&Spawn, req, stream).await {
            Ok(ok) => ok,
            Err(fastwebsockets::WebSocketError::InvalidStatusCode(code)) => return Err(ClientError::Http(code)),
            Err(e) => return Err(ClientError::Connect(e.to_string())),
        };
        let protocol =
            response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
        ws.set_auto_pong(opts.auto_pong);
        ws.set_auto_close(true);
        Ok(Self::start(ws, protocol, opts.read))
    }

    fn start(ws: WebSocket<Io>, protocol: Option<String>, read: bool) -> Self {
        let (mut rd, wr) = ws.split(tokio::io::split);
        let writer: Writer = Arc::new(Mutex::new(wr));
        let (tx, incoming) = mpsc::unbounded_channel();
        let (paused, mut pause) = tokio::sync::watch::channel(false);
        let (reader, unread) = if read {
            let writer = writer.clone();
            let task = tokio::spawn(async move {
                // Pongs and the close echo go out through the shared writer.
                let mut send = |frame: Frame<'static>| {
                    let writer = writer.clone();
                    async move { writer.lock().await.write_frame(frame).await }
                };
                loop {
                    if pause.wait_for(|p| !p).await.is_err() {
                        return;
                    }
                    let frame = match rd.read_frame(&mut send).await {
                        Ok(f) => f,
                        Err(_) => {
                            let _ = tx.send(Incoming::Gone);
                            return;
                        }
                    };
                    let event = match frame.opcode {
                        OpCode::Text => Incoming::Text(String::from_utf8_lossy(&frame.payload).into_owned()),
                        OpCode::Binary => Incoming::Binary(Bytes::copy_from_slice(&frame.payload)),
                        OpCode::Ping => Incoming::Ping,
                        OpCode::Pong => Incoming::Pong,
                        OpCode::Close => {
                            let code = (frame.payload.len() >= 2)
                                .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                            let _ = tx.send(Incoming::Close(code));
                            return;
                        }
                        OpCode::Continuation => Incoming::Binary(Bytes::copy_from_slice(&frame.payload)),
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            });
            (Some(task), None)
        } else {
            (None, Some(std::sync::Mutex::new(rd)))
        };
        Self { writer, incoming, stash: VecDeque::new(), protocol, next_id: 1, _unread: unread, reader, paused }
    }

    /// Stops (or resumes) reading from the socket: the server's writes then
    /// back up as they would to a client on a stalled link.
    pub fn pause_reading(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// The subprotocol the server selected, if it named one.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Sends one frame exactly as given (for fragments and malformed input).
    pub async fn send_frame(&self, fin: bool, opcode: OpCode, payload: Vec<u8>) -> Result<(), ClientError> {
        let frame = Frame::new(fin, opcode, None, Payload::Owned(payload));
        self.writer.lock().await.write_frame(frame).await.map_err(|_| ClientError::Closed(None))
    }

    /// Sends a text frame.
    pub async fn send_text(&self, text: &str) -> Result<(), ClientError> {
        self.send_frame(true, OpCode::Text, text.as_bytes().to_vec()).await
    }

    /// Sends a binary frame.
    pub async fn send_binary(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.send_frame(true, OpCode::Binary, bytes).await
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&self, value: &Value) -> Result<(), ClientError> {
        self.send_text(&value.to_string()).await
    }

    /// Sends a protobuf client frame.
    pub async fn send_proto(&self, frame: &pb::ClientFrame) -> Result<(), ClientError> {
        self.send_binary(frame.encode_to_vec()).await
    }

    /// Sends a close frame with `code`.
    pub async fn close(&self, code: u16) -> Result<(), ClientError> {
        let frame = Frame::close(code, b"");
        self.writer.lock().await.write_frame(frame).await.map_err(|_| ClientError::Closed(None))
    }

    /// The next thing from the server (stashed events first), or `None` on timeout.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Incoming> {
        if let Some((e, _)) = self.stash.pop_front() {
            return Some(e);
        }
        self.recv_fresh(timeout).await
    }

    async fn recv_fresh(&mut self, timeout: Duration) -> Option<Incoming> {
        match tokio::time::timeout(timeout, self.incoming.recv()).await {
            Ok(Some(e)) => Some(e),
            Ok(None) => Some(Incoming::Gone),
            Err(_) => None,
        }
    }

    /// The next data message as JSON, skipping pings and pongs.
    pub async fn next_json(&mut self, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                None => return Err(ClientError::Timeout),
                Some(Incoming::Text(t)) => {
                    return serde_json::from_str(&t).map_err(|e| ClientError::Unexpected(format!("{e}: {t}")))
                }
                Some(Incoming::Ping | Incoming::Pong) => continue,
                Some(Incoming::Close(c)) => return Err(ClientError::Closed(c)),
                Some(Incoming::Gone) => return Err(ClientError::Closed(None)),
                Some(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// The next JSON event of type `ty`, keeping other events for later.
    pub async fn next_of_type(&mut self, ty: &str, timeout: Duration) -> Result<Value, ClientError> {
        self.wait_json(timeout, |v| v["type"] == ty).await
    }

    /// The connection's end, if it is among the stashed events.
    fn stashed_end(&self) -> Option<ClientError> {
        self.stash.iter().find_map(|(e, _)| match e {
            Incoming::Close(c) => Some(ClientError::Closed(*c)),
            Incoming::Gone => Some(ClientError::Closed(None)),
            _ => None,
        })
    }

    /// The next JSON message matching `pred`; others are stashed in order.
    pub async fn wait_json(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value, ClientError> {
        self.wait_for(timeout, |_, json| json.filter(|v| pred(v)).cloned()).await
    }

    /// The first event (stashed or fresh) that `pick` accepts; the others
    /// are stashed in order. Text frames are parsed as JSON once, here.
    async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&Incoming, Option<&Value>) -> Option<T>,
    ) -> Result<T, ClientError> {
        if let Some((i, found)) =
            self.stash.iter().enumerate().find_map(|(i, (e, json))| pick(e, json.as_ref()).map(|f| (i, f)))
        {
            self.stash.remove(i);
            return Ok(found);
        }
        if let Some(end) = self.stashed_end() {
            return Err(end);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.recv_fresh(left).await else { return Err(ClientError::Timeout) };
            let json = match &event {
                Incoming::Text(t) => serde_json::from_str::<Value>(t).ok(),
                _ => None,
            };
            if let Some(found) = pick(&event, json.as_ref()) {
                return Ok(found);
            }
            let end = match event {
                Incoming::Close(c) => Some(ClientError::Closed(c)),
                Incoming::Gone => Some(ClientError::Closed(None)),
                _ => None,
            };
            self.stash.push_back((event, json));
            if let Some(end) = end {
                return Err(end);
            }
        }
    }

    /// Sends a JSON request with a fresh numeric id and waits for its reply.
    pub async fn request(&mut self, mut op: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = Value::from(id);
        self.send_json(&op).await?;
        self.wait_json(Duration::from_secs(10), |v| v["type"] == "reply" && v["id"] == id).await
    }

    /// The next data message as a protobuf server frame.
    pub async fn next_proto(&mut self, timeout: Duration) -> Result<pb::ServerFrame, ClientError> {
        self.wait_proto(timeout, |_| true).await
    }

    /// The next protobuf frame matching `pred`; others are stashed in order.
    pub async fn wait_proto(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&pb::ServerFrame) -> bool,
    ) -> Result<pb::ServerFrame, ClientError> {
        self.wait_for(timeout, |e, _| match e {
            Incoming::Binary(b) => pb::ServerFrame::decode(b.clone()).ok().filter(|f| pred(f)),
            _ => None,
        })
        .await
    }

    /// Sends a protobuf request with a fresh id and waits for its reply.
    pub async fn request_proto(&mut self, op: pb::client_frame::Op) -> Result<pb::Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_proto(&pb::ClientFrame { id, op: Some(op) }).await?;
        let frame = self
            .wait_proto(
                Duration::from_secs(10),
                |f| matches!(&f.kind, Some(pb::server_frame::Kind::Reply(r)) if r.id == id),
            )
            .await?;
        match frame.kind {
            Some(pb::server_frame::Kind::Reply(r)) => Ok(r),
            _ => unreachable!("matched a reply"),
        }
    }

    /// Waits for the server's close frame, ignoring data; `Ok(None)` if the
    /// connection ended without one.
    pub async fn wait_close(&mut self, timeout: Duration) -> Result<Option<u16>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.recv(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                None => return Err(ClientError::Timeout),
                Some(Incoming::Close(c)) => return Ok(c),
                Some(Incoming::Gone) => return Ok(None),
                Some(_) => continue,
            }
        }
    }
}
