use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

use super::*;

fn decode_all(bytes: &[u8], limits: Limits) -> Result<Vec<Frame>, DecodeError> {
    let mut d = Decoder::new(limits);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

fn one(bytes: &[u8]) -> Frame {
    let mut v = decode_all(bytes, Limits::default()).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

/// Test-side encoder of frames (the library only encodes commands).
fn encode(frame: &Frame, buf: &mut BytesMut) {
    match frame {
        Frame::Simple(b) => {
            buf.put_u8(b'+');
            buf.put_slice(b);
            buf.put_slice(b"\r\n");
        }
        Frame::Error(b) => {
            buf.put_u8(b'-');
            buf.put_slice(b);
            buf.put_slice(b"\r\n");
        }
        Frame::Integer(n) => buf.put_slice(format!(":{n}\r\n").as_bytes()),
        Frame::Bulk(b) => {
            buf.put_slice(format!("${}\r\n", b.len()).as_bytes());
            buf.put_slice(b);
            buf.put_slice(b"\r\n");
        }
        Frame::Null => buf.put_slice(b"_\r\n"),
        Frame::Array(items) => {
            buf.put_slice(format!("*{}\r\n", items.len()).as_bytes());
            items.iter().for_each(|i| encode(i, buf));
        }
        Frame::Push(items) => {
            buf.put_slice(format!(">{}\r\n", items.len()).as_bytes());
            items.iter().for_each(|i| encode(i, buf));
        }
        Frame::Map(pairs) => {
            buf.put_slice(format!("%{}\r\n", pairs.len()).as_bytes());
            for (k, v) in pairs {
                encode(k, buf);
                encode(v, buf);
            }
        }
        Frame::Boolean(b) => buf.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Double(d) => buf.put_slice(format!(",{d}\r\n").as_bytes()),
        Frame::BigNumber(b) => {
            buf.put_u8(b'(');
            buf.put_slice(b);
            buf.put_slice(b"\r\n");
        }
    }
}

fn line_bytes() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9 :._-]{0,20}".prop_map(Bytes::from)
}

fn frames() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line_bytes().prop_map(Frame::Simple),
        line_bytes().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Frame::Bulk(v.into())),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        (-1e9f64..1e9).prop_map(Frame::Double),
        "[0-9]{1,30}".prop_map(|s| Frame::BigNumber(s.into())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
        ]
    })
}

proptest! {
    /// Any frames, cut into reads at any points, decode to themselves.
    #[test]
    fn round_trip_over_any_split(frames in proptest::collection::vec(frames(), 1..5), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let mut wire = BytesMut::new();
        frames.iter().for_each(|f| encode(f, &mut wire));
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut d = Decoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([wire.len()]) {
            buf.extend_from_slice(&wire[last..p]);
            last = p;
            while let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, frames);
    }

    /// Random bytes never panic the decoder.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_all(&bytes, Limits::default());
    }
}

#[test]
fn resp2_replies() {
    assert_eq!(one(b"+OK\r\n"), Frame::Simple("OK".into()));
    assert_eq!(one(b"$-1\r\n"), Frame::Null);
    assert_eq!(one(b"*-1\r\n"), Frame::Null);
    assert_eq!(one(b"$0\r\n\r\n"), Frame::Bulk("".into()));
    assert_eq!(one(b":-12\r\n"), Frame::Integer(-12));
    assert_eq!(
        one(b"*2\r\n$1\r\na\r\n*0\r\n"),
        Frame::Array(vec![Frame::Bulk("a".into()), Frame::Array(vec![])])
    );
}

#[test]
fn resp3_replies() {
    assert_eq!(one(b"=8\r\ntxt:abcd\r\n"), Frame::Bulk("abcd".into()));
    assert_eq!(one(b"!3\r\nERR\r\n"), Frame::Error("ERR".into()));
    assert_eq!(
        one(b"~2\r\n:1\r\n:2\r\n"),
        Frame::Array(vec![Frame::Integer(1), Frame::Integer(2)])
    );
    assert_eq!(one(b",inf\r\n"), Frame::Double(f64::INFINITY));
    // An attribute is dropped, at the top and inside an aggregate.
    assert_eq!(one(b"|1\r\n+a\r\n:1\r\n:7\r\n"), Frame::Integer(7));
    assert_eq!(
        one(b"*2\r\n|1\r\n+a\r\n:1\r\n:7\r\n:8\r\n"),
        Frame::Array(vec![Frame::Integer(7), Frame::Integer(8)])
    );
    assert_eq!(one(b"|0\r\n:7\r\n"), Frame::Integer(7));
}

#[test]
fn nesting_past_the_limit_is_an_error_not_a_stack_overflow() {
    let mut wire = b"*1\r\n".repeat(100_000);
    wire.extend_from_slice(b":1\r\n");
    assert_eq!(
        decode_all(&wire, Limits::default()),
        Err(DecodeError::TooDeep(32))
    );
    let ok = [b"*1\r\n".repeat(31), b":1\r\n".to_vec()].concat();
    assert!(decode_all(&ok, Limits::default()).is_ok());
}

#[test]
fn announced_sizes_are_checked_before_buffering() {
    let mut d = Decoder::new(Limits {
        max_bulk: 1024,
        ..Limits::default()
    });
    let mut buf = BytesMut::from(&b"$2147483647\r\n"[..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::BulkTooLarge(2_147_483_647))
    );
    let mut d = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"*1000000000\r\n"[..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::TooManyElements(1_000_000_000))
    );
    // The limit is on all aggregates of a reply together.
    let mut wire = b"*3\r\n".to_vec();
    for _ in 0..3 {
        wire.extend_from_slice(b"*600000\r\n");
    }
    assert!(matches!(
        decode_all(&wire, Limits::default()),
        Err(DecodeError::TooManyElements(_))
    ));
    // A bulk within limits waits for its body and says how much it needs.
    let mut d = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"$10\r\nabc"[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(d.need(), 17);
}

#[test]
fn garbage_is_invalid() {
    for wire in [
        &b"?\x00\xffhello\r\n"[..],
        b"hello",
        b"$3\r\nabcd\r\n",
        b":12a\r\n",
        b"$-2\r\n",
        b"*-5\r\n",
        b"+OK\n",
        b"#x\r\n",
        b":99999999999999999999\r\n",
    ] {
        assert!(
            decode_all(wire, Limits::default()).is_err(),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let long = [b"+".to_vec(), vec![b'a'; 70_000]].concat();
    assert_eq!(
        decode_all(&long, Limits::default()),
        Err(DecodeError::LineTooLong(64 * 1024))
    );
}
