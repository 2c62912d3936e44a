//! TLS on the listeners: wss:// and gRPC with a CA the client trusts (and
//! not with one it does not), expired certificates, a certificate replaced
//! while connections are up, and a cluster whose gRPC runs over TLS.

use std::time::Duration;

use loadtest::client::{ClientError, ConnectOptions};
use support::pki::{Ca, Leaf};

use super::*;

fn tls_args(leaf: &Leaf) -> Vec<&str> {
    vec!["--tls-cert", &leaf.cert, "--tls-key", &leaf.key]
}

async fn connect(gw: &Gateway, ca: &Ca, user: &str) -> Result<Client, ClientError> {
    let mut opts = ConnectOptions::new(gw.url_with_token(&gw.token(user)));
    opts.tls = Some(ca.client());
    let mut c = Client::connect(opts).await?;
    let hello = c.next_json(T).await?;
    assert_eq!(hello["type"], "hello", "{hello}");
    Ok(c)
}

/// The gateway's admin gRPC over TLS, trusting `ca`.
async fn grpc_stats(gw: &Gateway, ca: &Ca) -> Result<pb::GatewayStats, String> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem))
        .domain_name("127.0.0.1");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", gw.grpc))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut admin = gateway::rpc::gateway_admin_client::GatewayAdminClient::new(channel);
    admin.stats(pb::GatewayStatsCall {}).await.map(|r| r.into_inner()).map_err(|e| e.to_string())
}

/// `POST /api/stats` over HTTPS trusting `ca`: (status, body).
async fn https_stats(api: &str, ca: &Ca) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = api.strip_prefix("https://").expect("an https:// API");
    let host = &rest[..rest.find('/').unwrap()];
    let tcp = tokio::net::TcpStream::connect(host).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(ca.client());
    let mut s = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let head = format!(
        "POST {}stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}",
        &rest[rest.find('/').unwrap()..]
    );
    s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

#[tokio::test]
async fn wss_https_and_grpc_work_with_a_trusted_ca_and_fail_with_another() {
    let (ca, stranger) = (Ca::new("trusted"), Ca::new("stranger"));
    let leaf = ca.leaf("gateway", 30);
    let gw = Gateway::start(&tls_args(&leaf));
    assert!(gw.ws.starts_with("wss://"), "{}", gw.ws);

    let mut alice = connect(&gw, &ca, "alice").await.expect("a trusted CA connects");
    join(&mut alice, "room").await;
    publish(&mut alice, "room", json!("over TLS")).await;
    match connect(&gw, &stranger, "eve").await {
        Err(ClientError::Connect(e)) => assert!(e.contains("TLS"), "{e}"),
        other => panic!("a CA the client does not trust must fail: {:?}", other.map(|_| ())),
    }
    // A plain WebSocket gets no upgrade from a TLS listener.
    let plain = Client::connect(ConnectOptions::new(gw.url_with_token(&gw.token("p")).replacen("wss://", "ws://", 1)));
    assert!(plain.await.is_err());

    // The HTTP server API speaks HTTPS on the same certificate.
    let api = gw.api.clone().expect("the embedded API");
    let (status, body) = https_stats(&api, &ca).await.expect("HTTPS with the trusted CA");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ring_size\":1"), "{body}");
    let refused = https_stats(&api, &stranger).await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("certificate")), "{refused:?}");

    let stats = grpc_stats(&gw, &ca).await.expect("gRPC with the trusted CA");
    assert_eq!(stats.connections, 1);
    assert!(grpc_stats(&gw, &stranger).await.is_err(), "gRPC with a CA the client does not trust");

    // The admin listener stays plain; it shows the certificate's expiry.
    let m = gw.metrics().await;
    let expiry = metric(&m, "switchboard_tls_certificate_expiry_timestamp_seconds{listener=\"server\"}");
    let in_days = (expiry - now_secs() as f64) / 86_400.0;
    assert!((29.0..=30.0).contains(&in_days), "expires in {in_days} days");
    still_served(&mut alice).await;
}

#[tokio::test]
async fn expired_or_mismatched_certificates_are_refused_at_start() {
    let ca = Ca::new("expiry");
    let (expired, good) = (ca.leaf("expired", -1), ca.leaf("good", 30));
    let refused = |cert: &str, key: &str| {
        let out = std::process::Command::new(process::binary("gateway"))
            .args(["--standalone", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
            .args(["--tls-cert", cert, "--tls-key", key])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&expired.cert, &expired.key);
    assert!(err.contains("--tls-cert") && err.contains("expired"), "{err}");
    let err = refused(&good.cert, &expired.key);
    assert!(err.contains("does not fit"), "{err}");
    let err = refused(&good.key, &good.key);
    assert!(err.contains("--tls-cert"), "{err}");
    // A --tls-cert without its key is a usage error.
    let out = std::process::Command::new(process::binary("gateway"))
        .args(["--standalone", "--tls-cert", &good.cert])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_while_old_ones_stay_up() {
    let (old_ca, new_ca) = (Ca::new("old"), Ca::new("new"));
    let leaf = old_ca.leaf("gateway", 30);
    let gw = Gateway::start(&tls_args(&leaf));
    let mut early = connect(&gw, &old_ca, "early").await.unwrap();
    join(&mut early, "room").await;

    // A broken replacement (the key of another certificate) is refused and
    // counted; the old certificate keeps serving.
    let other = new_ca.leaf("other", 30);
    std::fs::copy(&other.key, &leaf.key).unwrap();
    wait_metric(&gw, "switchboard_tls_reloads_total{listener=\"server\",result=\"error\"}", 1.0).await;
    connect(&gw, &old_ca, "still-old").await.expect("the old certificate still serves");

    // A good one, from another CA: new connections get it, the early
    // connection stays up and keeps working.
    let renewed = new_ca.leaf("renewed", 60);
    std::fs::copy(&renewed.cert, &leaf.cert).unwrap();
    std::fs::copy(&renewed.key, &leaf.key).unwrap();
    wait_metric(&gw, "switchboard_tls_reloads_total{listener=\"server\",result=\"ok\"}", 1.0).await;
    let mut late = connect(&gw, &new_ca, "late").await.expect("the new certificate serves new connections");
    assert!(connect(&gw, &old_ca, "stale").await.is_err(), "the old certificate is gone");
    join(&mut late, "room").await;
    let seq = publish(&mut early, "room", json!("after the swap")).await;
    let msg = late.next_json(T).await.unwrap();
    assert_eq!((msg["type"].as_str(), msg["seq"].as_u64()), (Some("message"), Some(seq)), "{msg}");
    let expiry =
        metric(&gw.metrics().await, "switchboard_tls_certificate_expiry_timestamp_seconds{listener=\"server\"}");
    assert!(expiry - now_secs() as f64 > 59.0 * 86_400.0, "the gauge follows the new certificate");
}

async fn wait_metric(gw: &Gateway, name: &str, value: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics().await, name) != value {
        assert!(std::time::Instant::now() < deadline, "{name} never reached {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_cluster_speaks_tls_on_grpc_and_websockets() {
    let ca = Ca::new("cluster");
    let leaf = ca.leaf("node", 30);
    let ca_file = ca.file();
    let mut common = tls_args(&leaf);
    common.extend(["--tls-ca", &ca_file]);
    let cluster = support::cluster::Cluster::start_full(1, 2, &common, &tls_args(&leaf)).await;
    // Gateways reach presence over TLS: presence answers (not degraded).
    for g in &cluster.gateways {
        let (status, body) = http_get(&format!("{}/readyz", g.admin)).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("degraded"), "presence over TLS: {body}");
    }
    let (g1, g2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let mut ann = connect(g1, &ca, "ann").await.unwrap();
    let mut ben = connect(g2, &ca, "ben").await.unwrap();
    // A presence query crosses gateway → presence gRPC.
    ann.send_json(&json!({"op": "presence", "users": ["ben"], "id": 7})).await.unwrap();
    let r = ann.next_json(T).await.unwrap();
    assert_eq!(r["users"][0]["online"], true, "{r}");
    join(&mut ann, "tls-room").await;
    join(&mut ben, "tls-room").await;
    let seq = publish(&mut ann, "tls-room", json!("across")).await;
    assert_eq!(ben.next_of_type("message", T).await.unwrap()["seq"].as_u64(), Some(seq));
}
