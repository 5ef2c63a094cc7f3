//! ALLIO's `POST /allio/webhook/{token}` body, read as the route reads it for an active
//! integration. Whatever is accepted must obey the intake limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline::api::allio_webhook_from_json;
use syncline_domain::allio::{intake::MAX_IDS, settings::Settings};
use uuid::Uuid;

/// The `uuid` the committed seeds carry.
const INTEGRATION_UUID: Uuid = Uuid::from_u128(0x6b1f_9a2e_4c3d_4e5f_8a9b_0c1d_2e3f_4a5b);

fuzz_target!(|data: &[u8]| {
    let settings = Settings {
        integration_id: Uuid::nil(),
        integration_uuid: INTEGRATION_UUID,
        api_base_url: "http://127.0.0.1:9/".into(),
        api_key: "fuzz".into(),
        active: true,
        delete_sync: false,
    };
    let Some(webhook) = allio_webhook_from_json(data, &settings) else {
        return;
    };
    assert!(webhook.ids.len() <= MAX_IDS);
    assert!(webhook.ids.iter().all(|id| *id >= 0));
    assert!((1..=100).contains(&webhook.command.len()));
    assert!(
        webhook
            .command
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    );
    let inactive = Settings {
        active: false,
        ..settings
    };
    assert!(allio_webhook_from_json(data, &inactive).is_none());
});
