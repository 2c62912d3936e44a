//! Plain HTTP/1.1 over loopback: a GET (enough to read a server's
//! `/metrics`), and the client handshake every HTTP caller here uses.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

/// The body of `url` (`http://host:port/path`), or an error; 5 s at most.
pub async fn get(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let fetch = async {
        let mut send = handshake(tokio::net::TcpStream::connect(host).await?).await?;
        let req = hyper::Request::get(path).header(hyper::header::HOST, host).body(Empty::<Bytes>::new())?;
        let body = send.send_request(req).await?.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: timed out"))?
}

/// An HTTP/1.1 client over `stream`, its connection driven by a task of its own.
pub async fn handshake<B>(stream: tokio::net::TcpStream) -> hyper::Result<hyper::client::conn::http1::SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}
