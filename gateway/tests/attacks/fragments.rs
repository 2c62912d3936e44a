//! Messages that never end.

use super::*;

// Fragments that never end. bad_input.rs covers 1 MiB in 1 KiB fragments
// (1009 past 64 KiB in total).

#[tokio::test]
async fn endless_tiny_fragments_close_with_1009() {
    let gw = Gateway::start(&[]);
    let mut bystander = Bystander::start(&gw).await;
    let mut c = gw.json("fragmenter").await;
    c.send_frame(false, OpCode::Text, b"{".to_vec()).await.unwrap();
    // One byte per continuation: 2 KB in total, far under the size cap, but
    // past the cap of 1024 fragments per message.
    for _ in 0..2000 {
        if c.send_frame(false, OpCode::Continuation, b" ".to_vec()).await.is_err() {
            break;
        }
    }
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1009));
    bystander.check(&gw).await;
}

#[tokio::test]
async fn a_message_that_stops_mid_way_still_ends_in_a_heartbeat_timeout() {
    let gw = Gateway::start(&["--heartbeat", "300ms", "--pong-timeout", "300ms"]);
    let mut bystander = Bystander::start(&gw).await;
    let mut opts = gw.options(Some(&gw.token("staller")));
    opts.auto_pong = false;
    let mut c = Client::connect(opts).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
    c.send_frame(false, OpCode::Text, br#"{"op":"publ"#.to_vec()).await.unwrap();
    let started = Instant::now();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4001));
    assert!(started.elapsed() >= Duration::from_millis(400), "only after a ping went unanswered");
    bystander.check(&gw).await;
}
