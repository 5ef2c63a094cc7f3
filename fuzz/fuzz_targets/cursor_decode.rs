//! The changes feed's cursor decoder on arbitrary text: it must never panic, and a
//! cursor it accepts (only one signed with its key) must re-encode to the same position.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline_domain::feed::CursorKey;
use uuid::Uuid;

/// The key the committed seed cursors were signed with.
const KEY: &[u8] = b"syncline-fuzz-cursor-key";
const TENANT: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);

fuzz_target!(|data: &[u8]| {
    let Ok(cursor) = std::str::from_utf8(data) else {
        return;
    };
    let key = CursorKey::new(KEY.to_vec());
    if let Ok((sort, position)) = key.decode(cursor, TENANT, "product") {
        let again = key.encode(TENANT, "product", sort, position);
        assert_eq!(key.decode(&again, TENANT, "product"), Ok((sort, position)));
        assert!(key.decode(cursor, TENANT, "category").is_err());
    }
});
