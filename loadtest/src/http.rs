//! A plain HTTP/1.1 GET over loopback: enough to read a server's `/metrics`.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

/// The body of `url` (`http://host:port/path`), or an error; 5 s at most.
pub async fn get(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(host).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path).header(hyper::header::HOST, host).body(Empty::<Bytes>::new())?;
        let body = send.send_request(req).await?.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: timed out"))?
}
