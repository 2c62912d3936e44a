//! `api`: the server API's `publish` under load, over HTTP/JSON or gRPC
//! `Rooms`, so the two transports of the same work can be compared in one
//! run. `--concurrency` callers each publish to rooms of their own, one call
//! at a time: over HTTP each keeps one keep-alive connection, over gRPC they
//! share one HTTP/2 channel, as backends use them. Every call must succeed,
//! and since each room has one publisher, its seqs must come back 1, 2, 3, …
//! in the order sent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use proto::pb;

use crate::report::Report;
use crate::stats::{histogram, Stats};

/// Which transport carries the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// `POST /api/publish` with a JSON body.
    Http,
    /// gRPC `Rooms.Publish`.
    Grpc,
}

/// Parameters of an API run.
#[derive(Debug, Clone, clap::Args)]
pub struct Api {
    /// The HTTP API's base, e.g. http://127.0.0.1:8090/api/ (loopback only).
    #[arg(long)]
    pub api: String,
    /// The gRPC `Rooms` address, e.g. 127.0.0.1:7071 (for --transport grpc).
    #[arg(long, default_value = "")]
    pub grpc: String,
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,
    /// Calls in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Rooms per caller.
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    /// Bearer token of the API (--api-token).
    #[arg(long, env = "SB_API_TOKEN", default_value = "", hide_env_values = true)]
    pub api_token: String,
}

/// One caller's way to publish.
enum Caller {
    Http(hyper::client::conn::http1::SendRequest<Full<Bytes>>, String),
    Grpc(router::rpc::rooms_client::RoomsClient<tonic::transport::Channel>),
}

impl Api {
    pub async fn run(&self, duration: Duration, stats: Arc<Stats>) -> anyhow::Result<Report> {
        let host = self.api.strip_prefix("http://").and_then(|r| r.split('/').next()).unwrap_or_default();
        anyhow::ensure!(host.starts_with("127."), "--api {}: loopback addresses only", self.api);
        let channel = match self.transport {
            Transport::Grpc => {
                anyhow::ensure!(self.grpc.starts_with("127."), "--grpc {:?}: a loopback address", self.grpc);
                Some(tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))?.connect().await?)
            }
            Transport::Http => None,
        };
        // Rooms of this run only, so every room's seqs start at 1.
        let run = format!("{:08x}", rand::random::<u32>());
        let end = Instant::now() + duration;
        let mut callers = Vec::new();
        for i in 0..self.concurrency {
            let caller = match &channel {
                Some(ch) => Caller::Grpc(router::rpc::rooms_client::RoomsClient::new(ch.clone())),
                None => {
                    let stream = tokio::net::TcpStream::connect(host).await?;
                    stream.set_nodelay(true)?;
                    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    Caller::Http(send, host.to_owned())
                }
            };
            let rooms: Vec<String> = (0..self.rooms).map(|r| format!("api-{run}-{i}-{r}")).collect();
            let (stats, token, base) = (stats.clone(), self.api_token.clone(), self.api.clone());
            callers.push(tokio::spawn(async move { call_loop(caller, rooms, &base, &token, end, &stats).await }));
        }
        for c in callers {
            c.await?;
        }
        let secs = duration.as_secs_f64();
        let params = vec![
            ("transport".into(), format!("{:?}", self.transport).to_lowercase()),
            ("concurrency".into(), self.concurrency.to_string()),
            ("rooms".into(), (self.concurrency * self.rooms).to_string()),
            ("duration".into(), format!("{duration:?}")),
        ];
        let mut report = Report::new("api", &self.api, params, &stats);
        report.figure("calls/s", stats.acked.load(Ordering::Relaxed) as f64 / secs, "/s");
        report.figure("calls", stats.acked.load(Ordering::Relaxed) as f64, "");
        let failed: u64 = report.failures.iter().map(|(_, n)| n).sum();
        if failed > 0 {
            report.errors.push(format!("{failed} calls failed"));
        }
        Ok(report)
    }
}

/// Publishes round-robin to `rooms` until `end`; checks each room's seqs.
async fn call_loop(mut caller: Caller, rooms: Vec<String>, base: &str, token: &str, end: Instant, stats: &Stats) {
    let mut latency = histogram();
    let mut next_seq = vec![1u64; rooms.len()];
    let mut k = 0usize;
    while Instant::now() < end {
        let r = k % rooms.len();
        k += 1;
        let started = Instant::now();
        stats.sent.fetch_add(1, Ordering::Relaxed);
        let seq = match &mut caller {
            Caller::Http(send, host) => http_publish(send, host, base, token, &rooms[r], k).await,
            Caller::Grpc(client) => {
                let data = Bytes::from(format!("{{\"n\":{k}}}"));
                let call = pb::PublishCall { room: rooms[r].clone(), data, ..Default::default() };
                client.publish(call).await.map(|r| r.into_inner().seq).map_err(|s| format!("grpc {:?}", s.code()))
            }
        };
        match seq {
            Ok(seq) => {
                let _ = latency.record(started.elapsed().as_micros() as u64);
                stats.acked.fetch_add(1, Ordering::Relaxed);
                if seq != next_seq[r] {
                    stats.fail(format!("seq {seq} where {} was due", next_seq[r]));
                }
                next_seq[r] = seq + 1;
            }
            Err(kind) => {
                // A closed connection ends its caller; any other failure, its call.
                let closed = kind == CLOSED;
                stats.fail(kind);
                if closed {
                    break;
                }
            }
        }
    }
    stats.merge_latency(&latency);
}

const CLOSED: &str = "connection closed";

async fn http_publish(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    base: &str,
    token: &str,
    room: &str,
    n: usize,
) -> Result<u64, String> {
    let body = format!("{{\"room\":\"{room}\",\"data\":{{\"n\":{n}}}}}");
    let mut req = hyper::Request::post(format!("{base}publish"))
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if !token.is_empty() {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|_| "request".to_owned())?;
    send.ready().await.map_err(|_| CLOSED.to_owned())?;
    let res = send.send_request(req).await.map_err(|_| CLOSED.to_owned())?;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.map_err(|_| "body".to_owned())?.to_bytes();
    if status != 200 {
        return Err(format!("http {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| "bad json".to_owned())?;
    v["seq"].as_u64().ok_or_else(|| "no seq".to_owned())
}
