//! The partner simulators' HTTP controls (what `syncline simulate ...` users drive).

use serde_json::{Value, json};
use syncline::simulators::{allio::AllioSimulator, cc::CcSimulator};

#[tokio::test]
async fn allio_simulator_controls_inject_failures_and_report_arrivals() {
    let (_sim, base) = AllioSimulator::start("key").await.unwrap();
    let http = reqwest::Client::new();
    let list = || {
        http.post(format!("{base}/reserve/list"))
            .header("x-api-key", "key")
            .json(&json!({ "ids": [1] }))
    };
    let control = http
        .post(format!("{base}/_sim/fail"))
        .json(&json!({ "status": 503, "times": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(control.status(), 204);
    assert_eq!(list().send().await.unwrap().status(), 503);
    let ok = list().send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["items"][0]["id"], 1);
    assert_eq!(
        list().send().await.unwrap().status(),
        429,
        "a third request within the second"
    );
    let bad = http
        .post(format!("{base}/_sim/fail"))
        .json(&json!({ "status": 42, "times": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let arrivals: Vec<Value> = http
        .get(format!("{base}/_sim/arrivals"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<_> = arrivals
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 200, 429]);
}

#[tokio::test]
async fn cc_simulator_controls_seed_users_and_inject_failures() {
    let (_sim, base) = CcSimulator::start().await.unwrap();
    let http = reqwest::Client::new();
    let items =
        json!([{ "item": "s1", "action": "ADD", "actionDate": "2017-05-02T10:45:12.798Z" }]);
    let seeded = http
        .put(format!("{base}/_sim/users/t1"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 204);
    let failing = http
        .post(format!("{base}/_sim/fail"))
        .json(&json!({ "status": 502, "times": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(failing.status(), 204);
    let get = || {
        http.get(format!("{base}/getUserFavorites"))
            .bearer_auth("t1")
    };
    assert_eq!(get().send().await.unwrap().status(), 502);
    let list: Value = get().send().await.unwrap().json().await.unwrap();
    assert_eq!(list, items);
    let stranger = http
        .get(format!("{base}/getUserFavorites"))
        .bearer_auth("t2")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
}
