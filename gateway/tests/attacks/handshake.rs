//! Handshake-level attacks over raw TCP: slowloris, malformed upgrades, oversized headers.

use super::*;

// Handshake-level attacks (raw TCP).

#[tokio::test]
async fn slowloris_handshakes_are_cut_at_the_header_timeout() {
    let gw = Gateway::start(&["--header-timeout", "1s"]);
    let mut bystander = Bystander::start(&gw).await;
    let addr = ws_addr(&gw);

    // 200 connections trickle a request head a byte every 100 ms and never
    // finish it; 10 connect and say nothing at all; 10 make one keep-alive
    // request (404) and then say nothing.
    let attackers = (0..220).map(|i| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut s = TcpStream::connect(&addr).await.unwrap();
            if i >= 210 {
                s.write_all(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
            }
            let head = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
            let mut answer = Vec::new();
            let mut sent = 0;
            loop {
                if i < 200 {
                    let byte = head.get(sent).copied().unwrap_or(b'z');
                    if s.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                    Err(_) => {}
                    Ok(Ok(0) | Err(_)) => break,
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                }
                assert!(started.elapsed() < Duration::from_secs(10), "a slowloris connection was never cut");
            }
            (i, started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        })
    });
    let attack = tokio::spawn(join_all(attackers));
    // While they hang on, everyone else is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bystander.check(&gw).await;

    let mut longest = Duration::ZERO;
    for result in attack.await.unwrap() {
        let (i, lived, answer) = result.unwrap();
        assert!(lived >= Duration::from_millis(800), "cut before the timeout: {lived:?}");
        assert!(lived < Duration::from_secs(4), "cut long after the 1 s timeout: {lived:?}");
        longest = longest.max(lived);
        if i < 210 {
            // Dropped without a response: no request ever arrived.
            assert!(answer.is_empty(), "{answer}");
        } else {
            assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        }
    }
    eprintln!("220 slow connections, the longest lived {longest:?}");
    bystander.check(&gw).await;
}

#[tokio::test]
async fn malformed_upgrades_get_rfc_http_errors() {
    let gw = Gateway::start(&[]);
    let mut bystander = Bystander::start(&gw).await;
    let addr = ws_addr(&gw);
    let wrong_version = "Sec-WebSocket-Version: 8";
    // (case, request, status, a header the response must carry)
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        ("no key", upgrade_request("GET", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, VERSION]), 400, None),
        (
            "key not 16 bytes",
            upgrade_request("GET", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, "Sec-WebSocket-Key: x", VERSION]),
            400,
            None,
        ),
        (
            "version 8",
            upgrade_request("GET", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY, wrong_version]),
            400,
            Some("sec-websocket-version: 13"),
        ),
        (
            "no version",
            upgrade_request("GET", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY]),
            400,
            Some("sec-websocket-version: 13"),
        ),
        (
            "POST",
            upgrade_request("POST", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY, VERSION, "Content-Length: 0"]),
            405,
            Some("allow: get"),
        ),
        (
            "HEAD",
            upgrade_request("HEAD", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY, VERSION]),
            405,
            Some("allow: get"),
        ),
        (
            "no Upgrade",
            upgrade_request("GET", "HTTP/1.1", &[HOST, CONNECTION, KEY, VERSION]),
            426,
            Some("upgrade: websocket"),
        ),
        (
            "no Connection",
            upgrade_request("GET", "HTTP/1.1", &[HOST, UPGRADE, KEY, VERSION]),
            426,
            Some("upgrade: websocket"),
        ),
        (
            "Upgrade: h2c",
            upgrade_request("GET", "HTTP/1.1", &[HOST, "Upgrade: h2c", CONNECTION, KEY, VERSION]),
            426,
            Some("upgrade: websocket"),
        ),
        ("HTTP/1.0", upgrade_request("GET", "HTTP/1.0", &[HOST, UPGRADE, CONNECTION, KEY, VERSION]), 400, None),
        ("no Host", upgrade_request("GET", "HTTP/1.1", &[UPGRADE, CONNECTION, KEY, VERSION]), 400, None),
    ];
    for (case, request, status, header) in cases {
        let (got, head) = raw_http(&addr, request).await;
        assert_eq!(got, status, "{case}: {head}");
        if let Some(header) = header {
            assert!(head.contains(&format!("\r\n{header}\r\n")), "{case}: {head}");
        }
        assert!(!head.contains("sec-websocket-accept"), "{case}: {head}");
    }
    // A well-formed request on the same listener still upgrades.
    let (got, head) =
        raw_http(&addr, upgrade_request("GET", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY, VERSION])).await;
    assert_eq!(got, 101, "{head}");
    bystander.check(&gw).await;
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn oversized_headers_get_431_and_memory_stays_bounded() {
    let gw = Gateway::start(&[]);
    let mut bystander = Bystander::start(&gw).await;
    let addr = ws_addr(&gw);
    let lines: String = (0..1000).map(|i| format!("X-Fill-{i}: {}\r\n", "a".repeat(50))).collect();
    let one_huge = format!("X-Huge: {}\r\n", "a".repeat(64 * 1024));
    let many: String = (0..150).map(|i| format!("X-{i}: a\r\n")).collect();
    let long_uri = format!("GET /ws?token={} HTTP/1.1\r\n{HOST}\r\n\r\n", "a".repeat(64 * 1024));
    let cases = [
        ("64 KiB of header lines", format!("GET /ws HTTP/1.1\r\n{HOST}\r\n{lines}\r\n")),
        ("one 64 KiB header", format!("GET /ws HTTP/1.1\r\n{HOST}\r\n{one_huge}\r\n")),
        ("150 small headers", format!("GET /ws HTTP/1.1\r\n{HOST}\r\n{many}\r\n")),
        ("64 KiB request line", long_uri),
    ];
    for (case, request) in cases {
        let (status, head) = raw_http(&addr, request.into_bytes()).await;
        eprintln!("{case}: HTTP {status}");
        // hyper answers 431 and closes; the answer can be lost to the reset
        // of the unread rest of the request, never replaced by another one.
        assert!(status == 431 || (status == 0 && head.is_empty()), "{case}: {head}");
        assert!(status == 431 || case != "150 small headers", "{case}: fits the buffer, so 431 arrives: {head}");
    }

    // 100 clients at once, each with 1 MiB of headers: the gateway reads at
    // most its 16 KiB head buffer of each.
    let before = rss_kib(gw.proc.pid());
    let mb = format!("GET /ws HTTP/1.1\r\n{HOST}\r\nX-Huge: {}\r\n\r\n", "a".repeat(1024 * 1024));
    let floods = (0..100).map(|_| raw_http(&addr, mb.clone().into_bytes()));
    let mut answered = 0;
    for (status, head) in join_all(floods).await {
        assert!(status == 431 || (status == 0 && head.is_empty()), "{head}");
        answered += (status == 431) as usize;
    }
    let grown = rss_kib(gw.proc.pid()).saturating_sub(before);
    eprintln!("1 MiB of headers: {answered} of 100 got 431; RSS grew {grown} KiB");
    assert!(grown < 32 * 1024, "memory must stay bounded: grew {grown} KiB");
    bystander.check(&gw).await;
}
