use bytes::{Bytes, BytesMut};
use slotguard_core::Op;

use super::*;

#[test]
fn reply_shapes_fit_their_commands() {
    let key = Bytes::from_static(b"k");
    let get = Cmd::Op(Op::Get.command(&key));
    assert!(get.fits(&Frame::Bulk("v".into())));
    assert!(get.fits(&Frame::Null));
    assert!(get.fits(&Frame::Error("MOVED 1 127.0.0.1:1".into())));
    assert!(!get.fits(&Frame::Integer(1)));
    assert!(!get.fits(&Frame::Simple("OK".into())));
    let set = Cmd::Op(
        Op::Set {
            value: "v".into(),
            ttl: None,
        }
        .command(&key),
    );
    assert!(set.fits(&Frame::Simple("OK".into())));
    assert!(!set.fits(&Frame::Bulk("v".into())));
    let del = Cmd::Op(Op::Delete.command(&key));
    assert!(del.fits(&Frame::Integer(0)));
    assert!(!del.fits(&Frame::Bulk("1".into())));
    assert!(Cmd::Admin(&["CLUSTER", "SHARDS"]).fits(&Frame::Array(vec![])));
}

#[test]
fn commands_encode_as_bulk_arrays() {
    let mut buf = BytesMut::new();
    Cmd::Op(
        Op::Set {
            value: "v".into(),
            ttl: Some(std::time::Duration::from_millis(1500)),
        }
        .command(&Bytes::from_static(b"k")),
    )
    .encode(&mut buf);
    Cmd::Admin(&["INFO", "replication"]).encode(&mut buf);
    assert_eq!(
        &buf[..],
        &b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1500\r\n*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n"[..]
    );
}
