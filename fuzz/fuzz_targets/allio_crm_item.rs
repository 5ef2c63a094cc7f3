//! One object of an ALLIO `*/list` answer mapped into our CRM schema (the first byte
//! picks reservation or deal). Mapping must never panic, and an accepted object keeps
//! its id and never copies it, `till` or the contact into the custom fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline_domain::allio::{Entity, crm};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let (entity, contact_key) = if pick % 2 == 0 {
        (Entity::Reserve, "client")
    } else {
        (Entity::Dealcard, "buyer")
    };
    let Ok(record) = crm::map(entity, &object) else {
        return;
    };
    assert!(!record.external_id.is_empty());
    let custom = record
        .custom_fields
        .as_object()
        .expect("custom fields are an object");
    assert!(!custom.contains_key("id") && !custom.contains_key(contact_key));
    if record.created_at.is_some() {
        assert!(!custom.contains_key("till"));
    }
});
