//! Data-plane frame decoding (`formats/SPEC.md` §19): any bytes give a
//! frame or a typed error, never a panic. A message that decodes re-encodes
//! (`Message::frame`) to a table that decodes to the same message, and to a
//! header that decodes unless the payload the message accounts for is over
//! `FRAME_PAYLOAD_BYTES_MAX` (a table cannot know whether its bytes travel
//! inline: a `GET_DONE` into a region carries none; receivers compare the
//! header's `payload_len` with the table's). Every message but `ERROR`,
//! whose text is decoded lossily, re-encodes to exactly the table it came
//! from.
//!
//! The input is read twice: as a receiver reads a frame (the header, then
//! `table_len` bytes of table, the rest payload), and with everything after
//! the header taken as the table, so that mutations reach the message
//! decoders without having to keep `table_len` in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::wire::{FRAME_PAYLOAD_BYTES_MAX, HEADER_BYTES, Header, Kind, Message};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(HEADER_BYTES) else {
        assert!(Header::decode(data).is_err(), "a short header decoded");
        return;
    };
    let Ok(header) = Header::decode(head) else {
        return;
    };
    assert_eq!(
        header.encode(),
        head,
        "a decoded header re-encodes to other bytes"
    );
    if let Some(table) = rest.get(..header.table_len as usize) {
        check(&header, table);
    }
    check(&header, rest);
});

fn check(header: &Header, table: &[u8]) {
    let Ok(message) = Message::decode(header.kind, table) else {
        return;
    };
    assert_eq!(message.kind(), header.kind);
    let payload_len = message.payload_len();
    let frame = message.frame(header.request_id);
    let (head, again) = frame.split_at(HEADER_BYTES);
    match Header::decode(head) {
        Ok(reframed) => {
            assert_eq!(reframed.kind, header.kind);
            assert_eq!(reframed.request_id, header.request_id);
            assert_eq!(reframed.table_len as usize, again.len());
            assert_eq!(reframed.payload_len, payload_len);
        }
        Err(error) => assert!(
            payload_len > FRAME_PAYLOAD_BYTES_MAX,
            "a re-encoded header does not decode: {error}"
        ),
    }
    let decoded = Message::decode(header.kind, again).expect("a re-encoded table decodes");
    assert_eq!(
        decoded, message,
        "a re-encoded table decodes to another message"
    );
    if header.kind != Kind::Error {
        assert_eq!(again, table, "a decoded table re-encodes to other bytes");
    }
}
