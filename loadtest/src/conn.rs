//! Lean connections for load: no channels, no stash.
//!
//! Scenarios open thousands of these. Unlike [`crate::client::Client`] (a
//! convenient test client with a reader task and a stash), a [`Conn`] is the
//! socket and nothing else: the scenario's task reads it directly, and a
//! cheap [`Sender`] handle lets another task write to it. A connection is a
//! WebSocket, one with permessage-deflate ([`Conn::open_deflate`]: read by
//! a small reader of its own, as fastwebsockets refuses compressed frames),
//! or the gateway's SSE transport ([`Conn::open_sse`]): events read from
//! `GET /sse`, ops POSTed over one kept-alive HTTP/1.1 connection. Every
//! byte received (frame heads included) is counted in [`received_bytes`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketRead, WebSocketWrite};
use http_body_util::{Empty, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpSocket;
use tokio::sync::Mutex;

use crate::client::{ClientError, Spawn};

type Io = TokioIo<Upgraded>;

/// An open connection to a gateway (or the peer).
pub struct Conn {
    reader: Reader,
    sender: Sender,
}

enum Reader {
    WebSocket(WebSocketRead<ReadHalf<Io>>),
    /// The socket and what is buffered of it.
    Deflate(ReadHalf<Io>, Vec<u8>),
    /// The event stream and what is buffered of it.
    Sse(hyper::body::Incoming, Vec<u8>),
}

/// Writes to a [`Conn`] from any task.
#[derive(Clone)]
pub enum Sender {
    WebSocket(Arc<Mutex<WebSocketWrite<WriteHalf<Io>>>>),
    Deflate(Arc<Mutex<WriteHalf<Io>>>),
    Sse(Arc<Poster>),
}

/// Where an SSE connection's ops go: `POST /sse/<conn>` with the hello's
/// secret, over one connection opened at the first op.
pub struct Poster {
    host: String,
    source: Option<IpAddr>,
    /// `(conn, post_secret)`, from the hello.
    hello: std::sync::OnceLock<(String, String)>,
    http: Mutex<Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    /// Set by a close: ops after it are refused.
    closed: std::sync::atomic::AtomicBool,
    /// Ends the reader (the stream has no close handshake of its own).
    closing: tokio::sync::Notify,
}

impl Sender {
    /// Sends one text frame (over SSE: one POST).
    pub async fn send(&self, text: String) -> Result<(), ClientError> {
        match self {
            Sender::WebSocket(w) => {
                let frame = Frame::new(true, OpCode::Text, None, Payload::Owned(text.into_bytes()));
                w.lock().await.write_frame(frame).await.map_err(|_| ClientError::Closed(None))
            }
            Sender::Deflate(w) => write_masked(w, 0x81, text.as_bytes()).await,
            Sender::Sse(p) => p.post(text).await,
        }
    }

    /// Sends a close frame; the server's echo ends the reader. Over SSE the
    /// stream is simply dropped by the reader's owner; ops stop here.
    pub async fn close(&self, code: u16) -> Result<(), ClientError> {
        match self {
            Sender::WebSocket(w) => {
                w.lock().await.write_frame(Frame::close(code, b"")).await.map_err(|_| ClientError::Closed(None))
            }
            Sender::Deflate(w) => write_masked(w, 0x88, &code.to_be_bytes()).await,
            Sender::Sse(p) => {
                p.closed.store(true, std::sync::atomic::Ordering::Relaxed);
                p.closing.notify_one();
                Ok(())
            }
        }
    }
}

impl Poster {
    async fn post(&self, text: String) -> Result<(), ClientError> {
        let Some((conn, secret)) = self.hello.get() else { return Err(ClientError::Unexpected("no hello yet".into())) };
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ClientError::Closed(Some(1000)));
        }
        let mut http = self.http.lock().await;
        if http.as_ref().is_none_or(|h| h.is_closed()) {
            let stream = connect_tcp(&self.host, self.source).await?;
            *http = Some(crate::http::handshake(stream).await.map_err(|e| ClientError::Connect(e.to_string()))?);
        }
        let send = http.as_mut().expect("opened above");
        send.ready().await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let req = hyper::Request::post(format!("/sse/{conn}"))
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"))
            .body(Full::new(Bytes::from(text)))
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let response = send.send_request(req).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let status = response.status().as_u16();
        // Read the (small) body so the connection can take the next POST.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        if status != 202 {
            return Err(ClientError::Http(status));
        }
        Ok(())
    }
}

async fn connect_tcp(host: &str, source: Option<IpAddr>) -> Result<tokio::net::TcpStream, ClientError> {
    let addr: SocketAddr = host.parse().map_err(|_| ClientError::Connect(format!("{host}: use IP:PORT")))?;
    let socket = TcpSocket::new_v4().map_err(|e| ClientError::Connect(e.to_string()))?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| ClientError::Connect(e.to_string()))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| ClientError::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// What `recv` returns.
#[derive(Debug)]
pub enum Received {
    Text(Bytes),
    Closed(Option<u16>),
}

impl Conn {
    /// Connects to `url` (`ws://host:port/path`) from `source` if given,
    /// with `token` as a bearer token.
    pub async fn open(
        url: &str,
        token: Option<&str>,
        source: Option<IpAddr>,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        tokio::time::timeout(timeout, Self::open_inner(url, token, source, tls))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn open_inner(
        url: &str,
        token: Option<&str>,
        source: Option<IpAddr>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ClientError> {
        let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(ClientError::Connect(format!("not a ws:// or wss:// URL: {url}"))),
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let stream = connect_tcp(host, source).await?;
        let path = if path.is_empty() { "/" } else { path };
        if secure {
            let tls = tls.ok_or_else(|| ClientError::Connect("wss:// needs --ca".into()))?;
            let stream = crate::client::tls_connect(tls, host, stream).await?;
            return Self::upgrade(host, path, token, stream, false).await;
        }
        Self::upgrade(host, path, token, stream, false).await
    }

    /// [`Conn::open`] offering permessage-deflate (no context takeover);
    /// an error if the gateway does not take it (`ws://` only).
    pub async fn open_deflate(
        url: &str,
        token: Option<&str>,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let rest =
            url.strip_prefix("ws://").ok_or_else(|| ClientError::Connect(format!("deflate needs ws://: {url}")))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let open = async {
            let stream = connect_tcp(host, source).await?;
            Self::upgrade(host, if path.is_empty() { "/" } else { path }, token, stream, true).await
        };
        tokio::time::timeout(timeout, open).await.map_err(|_| ClientError::Timeout)?
    }

    async fn upgrade<S>(
        host: &str,
        path: &str,
        token: Option<&str>,
        stream: S,
        deflate: bool,
    ) -> Result<Self, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut req = hyper::Request::builder()
            .uri(path)
            .header("Host", host)
            .header("Upgrade", "websocket")
            .header("Connection", "upgrade")
            .header("Sec-WebSocket-Key", fastwebsockets::handshake::generate_key())
            .header("Sec-WebSocket-Version", "13");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if deflate {
            req = req.header("Sec-WebSocket-Extensions", "permessage-deflate; client_no_context_takeover");
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut ws, response) = match fastwebsockets::handshake::client(&Spawn, req, stream).await {
            Ok(ok) => ok,
            Err(fastwebsockets::WebSocketError::InvalidStatusCode(code)) => return Err(ClientError::Http(code)),
            Err(e) => return Err(ClientError::Connect(e.to_string())),
        };
        if deflate {
            let taken = response.headers().get("sec-websocket-extensions").and_then(|v| v.to_str().ok());
            if !taken.is_some_and(|v| v.contains("permessage-deflate")) {
                return Err(ClientError::Connect("the server did not take permessage-deflate".into()));
            }
            let (rd, wr) = tokio::io::split(ws.into_inner());
            return Ok(Self {
                reader: Reader::Deflate(rd, Vec::new()),
                sender: Sender::Deflate(Arc::new(Mutex::new(wr))),
            });
        }
        ws.set_auto_pong(true);
        ws.set_auto_close(true);
        let (reader, writer) = ws.split(tokio::io::split);
        Ok(Self { reader: Reader::WebSocket(reader), sender: Sender::WebSocket(Arc::new(Mutex::new(writer))) })
    }

    /// Opens the SSE transport of the gateway whose WebSocket URL is `url`
    /// (`ws://host:port/ws`): `GET /sse?token=…`.
    pub async fn open_sse(
        url: &str,
        token: Option<&str>,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| ClientError::Connect(format!("SSE needs ws://: {url}")))?;
        let host = rest.split('/').next().unwrap_or(rest).to_owned();
        let open = async {
            let stream = connect_tcp(&host, source).await?;
            let mut send = crate::http::handshake(stream).await.map_err(|e| ClientError::Connect(e.to_string()))?;
            let path = format!("/sse?token={}", token.unwrap_or_default());
            let req = hyper::Request::get(path)
                .header(hyper::header::HOST, &host)
                .body(Full::new(Bytes::new()))
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            let response = send.send_request(req).await.map_err(|e| ClientError::Connect(e.to_string()))?;
            if response.status() != 200 {
                return Err(ClientError::Http(response.status().as_u16()));
            }
            Ok(response.into_body())
        };
        let body = tokio::time::timeout(timeout, open).await.map_err(|_| ClientError::Timeout)??;
        let poster = Poster {
            host,
            source,
            hello: std::sync::OnceLock::new(),
            http: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
            closing: tokio::sync::Notify::new(),
        };
        Ok(Self { reader: Reader::Sse(body, Vec::new()), sender: Sender::Sse(Arc::new(poster)) })
    }

    /// A handle for writing from another task.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Sends one text frame. (The future holds the sender, not the
    /// connection, so it is `Send` even though a `Conn` is not `Sync`.)
    pub fn send(&self, text: String) -> impl std::future::Future<Output = Result<(), ClientError>> + Send + 'static {
        let sender = self.sender.clone();
        async move { sender.send(text).await }
    }

    /// The next text frame (an SSE event's data), skipping control frames
    /// and comments, or the close. Not cancel-safe: keep it out of `select!`.
    pub async fn recv(&mut self) -> Received {
        let (writer, reader) = match (&self.sender, &mut self.reader) {
            (Sender::WebSocket(w), Reader::WebSocket(r)) => (w.clone(), r),
            (Sender::Deflate(w), Reader::Deflate(r, buf)) => return recv_deflate(r, buf, w).await,
            (Sender::Sse(poster), Reader::Sse(body, buf)) => return recv_sse(body, buf, poster).await,
            _ => unreachable!("a connection's reader and sender are of one kind"),
        };
        // Pongs and the close echo go out through the shared writer.
        let mut obligated = move |frame: Frame<'static>| {
            let writer = writer.clone();
            async move { writer.lock().await.write_frame(frame).await }
        };
        loop {
            match reader.read_frame(&mut obligated).await {
                Ok(f) if f.opcode == OpCode::Text => {
                    count_received(frame_head_len(f.payload.len()) + f.payload.len());
                    return Received::Text(Bytes::copy_from_slice(&f.payload));
                }
                Ok(f) if f.opcode == OpCode::Close => {
                    let code = (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                    return Received::Closed(code);
                }
                Ok(_) => continue,
                Err(_) => return Received::Closed(None),
            }
        }
    }

    /// Drops the TCP connection without a close frame.
    pub fn abort(self) {
        drop(self);
    }
}

/// The next event of an SSE stream: its data, or the close it announces.
async fn recv_sse(body: &mut hyper::body::Incoming, buf: &mut Vec<u8>, poster: &Poster) -> Received {
    use http_body_util::BodyExt as _;
    loop {
        if let Some(e) = crate::sse::take_event(buf) {
            if e.event.as_deref() == Some("close") {
                let code = serde_json::from_str::<serde_json::Value>(&e.data).ok().and_then(|v| v["code"].as_u64());
                return Received::Closed(code.map(|c| c as u16));
            }
            if poster.hello.get().is_none() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) {
                    if let (Some(conn), Some(secret)) = (v["conn"].as_str(), v["post_secret"].as_str()) {
                        let _ = poster.hello.set((conn.to_owned(), secret.to_owned()));
                    }
                }
            }
            return Received::Text(Bytes::from(e.data));
        }
        let frame = tokio::select! {
            f = body.frame() => f,
            // Our close: the reader ends as a WebSocket's would on the echo.
            _ = poster.closing.notified() => return Received::Closed(Some(1000)),
        };
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    count_received(data.len());
                    buf.extend_from_slice(&data);
                }
            }
            _ => return Received::Closed(None),
        }
    }
}

static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes received by every connection of this process so far, as they came
/// over the wire (WebSocket frame heads and SSE framing included).
pub fn received_bytes() -> u64 {
    RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
}

fn count_received(n: usize) {
    RECEIVED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

/// The head of an unmasked server frame with `len` bytes of payload.
fn frame_head_len(len: usize) -> usize {
    match len {
        n if n < 126 => 2,
        n if n < 65_536 => 4,
        _ => 10,
    }
}

/// Writes one masked client frame (`first`: FIN, RSV and opcode).
async fn write_masked(w: &Mutex<WriteHalf<Io>>, first: u8, payload: &[u8]) -> Result<(), ClientError> {
    use tokio::io::AsyncWriteExt as _;
    let frame = masked_frame(first, rand::random(), payload);
    w.lock().await.write_all(&frame).await.map_err(|_| ClientError::Closed(None))
}

/// One client frame (`first`: FIN, RSV and opcode) masked with `mask`, as
/// RFC 6455 asks of clients.
pub fn masked_frame(first: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65_536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The next message of a permessage-deflate WebSocket, inflated; pings are
/// answered, pongs skipped.
async fn recv_deflate(r: &mut ReadHalf<Io>, buf: &mut Vec<u8>, w: &Mutex<WriteHalf<Io>>) -> Received {
    use tokio::io::AsyncReadExt as _;
    // A message in fragments: (compressed, payload so far).
    let mut partial: Option<(bool, Vec<u8>)> = None;
    loop {
        while let Some((first, head, len)) = server_frame_head(buf) {
            if buf.len() < head + len {
                break;
            }
            let payload: Vec<u8> = buf.drain(..head + len).skip(head).collect();
            count_received(head + len);
            let (fin, rsv1, opcode) = (first & 0x80 != 0, first & 0x40 != 0, first & 0x0f);
            match opcode {
                0..=2 => {
                    let (compressed, mut data) = match (opcode, partial.take()) {
                        (0, Some(p)) => p,
                        (0, None) => return Received::Closed(None),
                        _ => (rsv1, Vec::new()),
                    };
                    data.extend_from_slice(&payload);
                    if !fin {
                        partial = Some((compressed, data));
                        continue;
                    }
                    let text = if compressed { inflate(&data) } else { Some(data) };
                    return text.map_or(Received::Closed(None), |t| Received::Text(Bytes::from(t)));
                }
                8 => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let _ = write_masked(w, 0x88, &payload[..payload.len().min(2)]).await;
                    return Received::Closed(code);
                }
                9 => {
                    let _ = write_masked(w, 0x8a, &payload).await;
                }
                _ => {}
            }
        }
        let mut chunk = [0u8; 16 << 10];
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return Received::Closed(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// (first byte, head length, payload length) of the server frame at the
/// start of `buf`, once its head is in.
fn server_frame_head(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let len7 = *buf.get(1)? & 0x7f;
    match len7 {
        126 => Some((buf[0], 4, u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize)),
        127 => Some((buf[0], 10, u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize)),
        n => Some((buf[0], 2, n as usize)),
    }
}

/// One message of a no-context-takeover stream.
fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut d = flate2::write::DeflateDecoder::new(Vec::new());
    d.write_all(data).ok()?;
    d.write_all(&[0, 0, 0xff, 0xff]).ok()?;
    d.flush().ok()?;
    Some(std::mem::take(d.get_mut()))
}
