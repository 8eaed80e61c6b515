//! Commands as RESP arrays of bulk strings.

use bytes::{BufMut, Bytes, BytesMut};

/// One argument of a command.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// A fixed word (`GET`, `PX`, `SHARDS`).
    Static(&'static str),
    /// A key or value, shared with the request (no copy until the write).
    Bytes(Bytes),
    /// An integer, written in decimal.
    Int(u64),
}

/// Append `*n` and each argument as a bulk string to `buf`.
pub(crate) fn encode_command(buf: &mut BytesMut, args: &[Arg]) {
    let mut num = itoa::Buffer::new();
    let mut len_buf = itoa::Buffer::new();
    buf.reserve(16 + args.iter().map(|a| arg_len(a) + 16).sum::<usize>());
    buf.put_u8(b'*');
    buf.put_slice(num.format(args.len()).as_bytes());
    buf.put_slice(b"\r\n");
    for arg in args {
        let bytes: &[u8] = match arg {
            Arg::Static(s) => s.as_bytes(),
            Arg::Bytes(b) => b,
            Arg::Int(n) => num.format(*n).as_bytes(),
        };
        buf.put_u8(b'$');
        buf.put_slice(len_buf.format(bytes.len()).as_bytes());
        buf.put_slice(b"\r\n");
        buf.put_slice(bytes);
        buf.put_slice(b"\r\n");
    }
}

fn arg_len(arg: &Arg) -> usize {
    match arg {
        Arg::Static(s) => s.len(),
        Arg::Bytes(b) => b.len(),
        Arg::Int(_) => 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_bulk_arrays() {
        let mut buf = BytesMut::new();
        encode_command(
            &mut buf,
            &[
                Arg::Static("SET"),
                Arg::Bytes(Bytes::from_static(b"k\r\n")),
                Arg::Bytes(Bytes::new()),
                Arg::Static("PX"),
                Arg::Int(1500),
            ],
        );
        assert_eq!(
            &buf[..],
            b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
        );
    }
}
