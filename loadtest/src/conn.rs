//! Lean WebSocket connections for load: no channels, no stash.
//!
//! Scenarios open thousands of these. Unlike [`crate::client::Client`] (a
//! convenient test client with a reader task and a stash), a [`Conn`] is the
//! socket and nothing else: the scenario's task reads it directly, and a
//! cheap [`Sender`] handle lets another task write to it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketRead, WebSocketWrite};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpSocket;
use tokio::sync::Mutex;

use crate::client::{ClientError, Spawn};

type Io = TokioIo<Upgraded>;

/// An open WebSocket to a gateway (or the peer).
pub struct Conn {
    reader: WebSocketRead<ReadHalf<Io>>,
    sender: Sender,
}

/// Writes to a [`Conn`] from any task.
#[derive(Clone)]
pub struct Sender(Arc<Mutex<WebSocketWrite<WriteHalf<Io>>>>);

impl Sender {
    /// Sends one text frame.
    pub async fn send(&self, text: String) -> Result<(), ClientError> {
        let frame = Frame::new(true, OpCode::Text, None, Payload::Owned(text.into_bytes()));
        self.0.lock().await.write_frame(frame).await.map_err(|_| ClientError::Closed(None))
    }

    /// Sends a close frame; the server's echo ends the reader.
    pub async fn close(&self, code: u16) -> Result<(), ClientError> {
        self.0.lock().await.write_frame(Frame::close(code, b"")).await.map_err(|_| ClientError::Closed(None))
    }
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
        let addr: SocketAddr = host.parse().map_err(|_| ClientError::Connect(format!("{host}: use IP:PORT")))?;
        let socket = TcpSocket::new_v4().map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| ClientError::Connect(e.to_string()))?;
        }
        let stream = socket.connect(addr).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let path = if path.is_empty() { "/" } else { path };
        if secure {
            let tls = tls.ok_or_else(|| ClientError::Connect("wss:// needs --ca".into()))?;
            let stream = crate::client::tls_connect(tls, host, stream).await?;
            return Self::upgrade(host, path, token, stream).await;
        }
        Self::upgrade(host, path, token, stream).await
    }

    async fn upgrade<S>(host: &str, path: &str, token: Option<&str>, stream: S) -> Result<Self, ClientError>
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
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut ws, _) = match fastwebsockets::handshake::client(&Spawn, req, stream).await {
            Ok(ok) => ok,
            Err(fastwebsockets::WebSocketError::InvalidStatusCode(code)) => return Err(ClientError::Http(code)),
            Err(e) => return Err(ClientError::Connect(e.to_string())),
        };
        ws.set_auto_pong(true);
        ws.set_auto_close(true);
        let (reader, writer) = ws.split(tokio::io::split);
        Ok(Self { reader, sender: Sender(Arc::new(Mutex::new(writer))) })
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

    /// The next text frame, skipping control frames, or the close. Not
    /// cancel-safe: keep it out of `select!`.
    pub async fn recv(&mut self) -> Received {
        let writer = self.sender.0.clone();
        // Pongs and the close echo go out through the shared writer.
        let mut obligated = move |frame: Frame<'static>| {
            let writer = writer.clone();
            async move { writer.lock().await.write_frame(frame).await }
        };
        loop {
            match self.reader.read_frame(&mut obligated).await {
                Ok(f) if f.opcode == OpCode::Text => return Received::Text(Bytes::copy_from_slice(&f.payload)),
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
