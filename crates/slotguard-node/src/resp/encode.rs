//! Commands as RESP arrays of bulk strings.

use bytes::{BufMut, BytesMut};

/// One argument of a command: the same as a cache command's (a fixed
/// word, a key or value shared with the request, an integer in decimal).
pub(crate) use slotguard_core::op::Arg;

/// Append `*n` and each argument as a bulk string to `buf`.
pub(crate) fn encode_command<'a, I>(buf: &mut BytesMut, args: I)
where
    I: IntoIterator<Item = Arg<'a>>,
    I::IntoIter: Clone,
{
    let args = args.into_iter();
    let mut num = itoa::Buffer::new();
    let mut len_buf = itoa::Buffer::new();
    let (count, size) = args.clone().fold((0usize, 16usize), |(n, size), a| {
        (n + 1, size + arg_len(&a) + 16)
    });
    buf.reserve(size);
    buf.put_u8(b'*');
    buf.put_slice(num.format(count).as_bytes());
    buf.put_slice(b"\r\n");
    for arg in args {
        let bytes: &[u8] = match arg {
            Arg::Word(s) => s.as_bytes(),
            Arg::Bytes(b) => b,
            Arg::Int(n) => num.format(n).as_bytes(),
        };
        buf.put_u8(b'$');
        buf.put_slice(len_buf.format(bytes.len()).as_bytes());
        buf.put_slice(b"\r\n");
        buf.put_slice(bytes);
        buf.put_slice(b"\r\n");
    }
}

fn arg_len(arg: &Arg<'_>) -> usize {
    match arg {
        Arg::Word(s) => s.len(),
        Arg::Bytes(b) => b.len(),
        Arg::Int(_) => 20,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn encodes_bulk_arrays() {
        let mut buf = BytesMut::new();
        let (key, value) = (Bytes::from_static(b"k\r\n"), Bytes::new());
        encode_command(
            &mut buf,
            [
                Arg::Word("SET"),
                Arg::Bytes(&key),
                Arg::Bytes(&value),
                Arg::Word("PX"),
                Arg::Int(1500),
            ],
        );
        assert_eq!(
            &buf[..],
            b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
        );
    }
}
