//! Tests of [`super`] (reader.rs).

use super::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    loadtest::conn::masked_frame((fin as u8) << 7 | opcode, [1, 2, 3, 4], payload)
}

async fn reader_for(bytes: Vec<u8>, max: usize) -> FrameReader {
    reader_for_chunks(vec![bytes], max).await
}

/// A reader whose client writes `chunks` one at a time, pausing between.
async fn reader_for_chunks(chunks: Vec<Vec<u8>>, max: usize) -> FrameReader {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        for chunk in chunks {
            c.write_all(&chunk).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Keep the socket open long enough for the reader.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    });
    let (s, _) = listener.accept().await.unwrap();
    FrameReader::new(crate::websocket::stream::ReadHalf::Tcp(s.into_split().0), Bytes::new(), max)
}

#[tokio::test]
async fn reassembles_fragments_and_passes_control_frames_between() {
    let mut bytes = frame(false, 1, "hé".as_bytes()[..2].as_ref());
    bytes.extend(frame(true, 9, b"p"));
    bytes.extend(frame(true, 0, &"hé".as_bytes()[2..]));
    bytes.extend(frame(true, 2, &[0, 1]));
    bytes.extend(frame(true, 8, &[0x03, 0xe8]));
    let mut r = reader_for(bytes, 1024).await;
    assert_eq!(r.next().await.unwrap(), Incoming::Ping(Bytes::from_static(b"p")));
    assert_eq!(r.next().await.unwrap(), Incoming::Text(Bytes::from("hé")));
    assert_eq!(r.next().await.unwrap(), Incoming::Binary(Bytes::from_static(&[0, 1])));
    assert_eq!(r.next().await.unwrap(), Incoming::Close(Some(1000)));
}

#[tokio::test]
async fn caps_the_reassembled_message_not_just_the_frame() {
    let mut bytes = Vec::new();
    for _ in 0..20 {
        bytes.extend(frame(false, if bytes.is_empty() { 1 } else { 0 }, &[b'a'; 100]));
    }
    let mut r = reader_for(bytes, 1000).await;
    assert_eq!(r.next().await.unwrap_err(), ReadError::too_big());
    let mut r = reader_for(frame(true, 2, &vec![0; 70_000]), 65_536).await;
    assert_eq!(r.next().await.unwrap_err(), ReadError::too_big());
}

#[tokio::test]
async fn endless_empty_fragments_are_bounded() {
    let mut bytes = frame(false, 1, b"");
    for _ in 0..MAX_FRAGMENTS + 1 {
        bytes.extend(frame(false, 0, b""));
    }
    let mut r = reader_for(bytes, 1000).await;
    assert_eq!(r.next().await.unwrap_err(), ReadError::too_big());
}

#[tokio::test]
async fn a_text_frame_arriving_in_pieces_is_unmasked_and_checked_as_it_comes() {
    // "é" split across the pieces, and pieces not on mask boundaries.
    let text = "abcdé-fghijklmnopé";
    let bytes = frame(true, 1, text.as_bytes());
    let pieces = vec![bytes[..9].to_vec(), bytes[9..13].to_vec(), bytes[13..].to_vec()];
    let mut r = reader_for_chunks(pieces, 1000).await;
    assert_eq!(r.next().await.unwrap(), Incoming::Text(Bytes::from(text)));

    // Invalid text fails on the first piece: the rest never comes.
    let bytes = frame(true, 1, &[b'a', 0xf4, 0x90, 0x80, 0x80, b'b', b'c', b'd']);
    let mut r = reader_for_chunks(vec![bytes[..10].to_vec()], 1000).await;
    let failed = tokio::time::timeout(std::time::Duration::from_secs(1), r.next()).await;
    assert_eq!(failed.expect("failed before the frame was complete").unwrap_err(), ReadError::utf8());
}

#[test]
fn a_raised_message_cap_allows_proportionally_more_fragments() {
    assert_eq!(max_fragments(64 * 1024), MAX_FRAGMENTS);
    assert_eq!(max_fragments(1000), MAX_FRAGMENTS);
    assert_eq!(max_fragments(16 << 20), 262_144);
}

#[tokio::test]
async fn protocol_violations_map_to_close_codes() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (frame(true, 1, &[0xff, 0xfe]), close::INVALID_PAYLOAD),
        (frame(false, 1, &[0xc3, 0x28]), close::INVALID_PAYLOAD),
        (frame(true, 0, b"x"), close::PROTOCOL_ERROR),
        (frame(true, 3, b""), close::PROTOCOL_ERROR),
        (frame(false, 9, b""), close::PROTOCOL_ERROR),
        (frame(true, 8, &[0x03, 0xed]), close::PROTOCOL_ERROR),
        (vec![0x81, 0x01, b'a'], close::PROTOCOL_ERROR),
        // A 64-bit length with its top bit set, alone and after a fragment
        // (where adding it to the bytes so far would overflow).
        ([&[0x82, 0xff][..], &u64::MAX.to_be_bytes(), &[1, 2, 3, 4]].concat(), close::PROTOCOL_ERROR),
        (
            [frame(false, 2, b"abc"), vec![0x80, 0xff], (u64::MAX - 2).to_be_bytes().to_vec(), vec![1, 2, 3, 4]]
                .concat(),
            close::PROTOCOL_ERROR,
        ),
    ];
    for (bytes, code) in cases {
        let mut r = reader_for(bytes.clone(), 1000).await;
        match r.next().await {
            Err(ReadError::Protocol(got)) => assert_eq!(got.code, code, "{bytes:?}"),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}

type Outcome = Result<Incoming, ReadError>;

/// `payload` compressed as a client would send it (trailing marker removed).
fn packed(payload: &[u8]) -> Vec<u8> {
    crate::websocket::deflate::deflate(&Bytes::copy_from_slice(payload)).to_vec()
}

#[tokio::test]
async fn compressed_messages_are_inflated_within_the_cap_when_negotiated() {
    let rsv1 = |mut f: Vec<u8>| {
        f[0] |= 0x40;
        f
    };
    let text = "¡compressed! ".repeat(40);
    let z = packed(text.as_bytes());
    let (a, b) = z.split_at(z.len() / 2);
    let close = |code| Err(ReadError::Protocol(Close::new(code, "")));
    #[rustfmt::skip]
    let table: Vec<(&str, bool, Vec<u8>, usize, Outcome)> = vec![
        ("one frame", true, rsv1(frame(true, 1, &z)), 1000, Ok(Incoming::Text(Bytes::from(text.clone())))),
        ("fragments, RSV1 on the first", true, [rsv1(frame(false, 1, a)), frame(true, 0, b)].concat(), 1000,
            Ok(Incoming::Text(Bytes::from(text.clone())))),
        ("binary", true, rsv1(frame(true, 2, &packed(&[7; 300]))), 1000, Ok(Incoming::Binary(Bytes::from(vec![7; 300])))),
        ("over the cap once inflated", true, rsv1(frame(true, 1, &z)), 100, close(close::TOO_BIG)),
        ("RSV1 on a continuation", true, [frame(false, 1, b"ab"), rsv1(frame(true, 0, b"cd"))].concat(), 1000,
            close(close::PROTOCOL_ERROR)),
        ("RSV1 on a control frame", true, rsv1(frame(true, 9, b"")), 1000, close(close::PROTOCOL_ERROR)),
        ("RSV1 without the extension", false, rsv1(frame(true, 1, &z)), 1000, close(close::PROTOCOL_ERROR)),
        ("not deflate", true, rsv1(frame(true, 1, &[0xff; 8])), 1000, close(close::INVALID_PAYLOAD)),
        ("invalid UTF-8 inside", true, rsv1(frame(true, 1, &packed(&[0xc3, 0x28]))), 1000, close(close::INVALID_PAYLOAD)),
    ];
    for (what, deflate, bytes, max, want) in table {
        let mut r = reader_for(bytes, max).await.with_deflate(deflate);
        let got = r.next().await;
        match (&got, &want) {
            (Err(ReadError::Protocol(g)), Err(ReadError::Protocol(w))) => assert_eq!(g.code, w.code, "{what}: {got:?}"),
            _ => assert_eq!(got, want, "{what}"),
        }
    }
}
