//! The outbound classifier against a real HTTP server on 127.0.0.1 answering each status.

use std::time::Duration;

use syncline_jobs::core::{
    error::ErrorKind,
    outbound::{client, send},
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

async fn outcome(template: ResponseTemplate) -> Result<String, (ErrorKind, String)> {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(template)
        .mount(&server)
        .await;
    let http = client(Duration::from_millis(500));
    send(http.post(server.uri()))
        .await
        .map(|r| r.body)
        .map_err(|e| (e.kind, e.message))
}

fn retryable(after: Option<u64>) -> ErrorKind {
    ErrorKind::Retryable {
        retry_after: after.map(Duration::from_secs),
    }
}

#[tokio::test]
async fn two_hundreds_pass_with_their_body() {
    for status in [200, 201, 204] {
        let body = outcome(ResponseTemplate::new(status).set_body_string("ok")).await;
        let expected = if status == 204 { "" } else { "ok" };
        assert_eq!(body.as_deref(), Ok(expected), "status {status}");
    }
}

#[tokio::test]
async fn throttling_and_gateway_errors_are_retryable_and_honour_retry_after() {
    for status in [429, 502, 503] {
        let (kind, _) = outcome(ResponseTemplate::new(status)).await.unwrap_err();
        assert_eq!(kind, retryable(None), "status {status}");
    }
    let (kind, message) = outcome(ResponseTemplate::new(429).insert_header("retry-after", "12"))
        .await
        .unwrap_err();
    assert_eq!(kind, retryable(Some(12)));
    assert_eq!(message, "HTTP 429");
}

#[tokio::test]
async fn other_server_errors_and_redirects_are_permanent() {
    for status in [500, 501, 504, 301, 302, 307] {
        let (kind, message) =
            outcome(ResponseTemplate::new(status).insert_header("location", "http://127.0.0.1:1/"))
                .await
                .unwrap_err();
        assert_eq!(kind, ErrorKind::Permanent, "status {status}");
        assert!(message.contains(&status.to_string()), "{message}");
    }
}

#[tokio::test]
async fn client_errors_are_permanent_unless_the_body_says_retryable() {
    for status in [400, 401, 403, 404, 422] {
        let (kind, _) = outcome(ResponseTemplate::new(status)).await.unwrap_err();
        assert_eq!(kind, ErrorKind::Permanent, "status {status}");
    }
    let (kind, message) = outcome(ResponseTemplate::new(409).set_body_json(
        serde_json::json!({"custom_message": "locked, try later", "retryable": true}),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        (kind, message.as_str()),
        (retryable(None), "locked, try later")
    );

    let (kind, message) = outcome(
        ResponseTemplate::new(400)
            .set_body_json(serde_json::json!({"custom_message": "bad sku", "retryable": false})),
    )
    .await
    .unwrap_err();
    assert_eq!((kind, message.as_str()), (ErrorKind::Permanent, "bad sku"));
}

#[tokio::test]
async fn long_custom_messages_are_cut_to_256_characters() {
    let (_, message) = outcome(ResponseTemplate::new(400).set_body_json(
        serde_json::json!({"custom_message": "x".repeat(1000), "retryable": false}),
    ))
    .await
    .unwrap_err();
    assert_eq!(message.len(), 256);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retryable() {
    let (kind, message) = outcome(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert_eq!(kind, retryable(None));
    assert!(message.starts_with("timed out"), "{message}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = client(Duration::from_millis(500));
    let err = send(http.post(format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, retryable(None));
    assert!(
        err.message.starts_with("connection failed"),
        "{}",
        err.message
    );
}
