//! IMSHOP's `POST /imshop/favorites` body, read as the route reads it. Whatever is
//! accepted must obey the protocol's limits, and deciding it against an empty store and
//! against a store holding its own list must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline::api::imshop_request_from_json;
use syncline_domain::favourites::{
    MAX_ID_CHARS, MAX_ITEMS, imshop,
    lww::{Action, Stamp},
    store::UserFavourites,
};

const NOW_MS: i64 = 1_800_000_000_000;
const DAY_MS: i64 = 24 * 3600 * 1000;

fuzz_target!(|data: &[u8]| {
    let Some(request) = imshop_request_from_json(data, NOW_MS) else {
        return;
    };
    assert!((0..=NOW_MS + DAY_MS).contains(&request.last_sync_ms));
    assert!(request.items.len() <= MAX_ITEMS);
    let distinct: std::collections::BTreeSet<_> = request.items.iter().collect();
    assert_eq!(
        distinct.len(),
        request.items.len(),
        "duplicate ids accepted"
    );
    for id in request
        .items
        .iter()
        .map(|i| i.as_str())
        .chain([request.user.as_str()])
    {
        assert!(
            (1..=MAX_ID_CHARS).contains(&id.chars().count()),
            "id {id:?}"
        );
    }

    let empty = UserFavourites::default();
    let plan = imshop::plan(&request, &empty, NOW_MS);
    assert!(plan.writes.iter().all(|(_, s)| s.action == Action::Add));

    let own = UserFavourites {
        last_sync_ms: request.last_sync_ms,
        items: request
            .items
            .iter()
            .map(|i| {
                let stamp = Stamp {
                    action: Action::Add,
                    at_ms: request.last_sync_ms,
                };
                (i.clone(), stamp)
            })
            .collect(),
    };
    let plan = imshop::plan(&request, &own, NOW_MS);
    assert!(
        plan.writes.is_empty(),
        "re-sending the stored list changed it"
    );
});
