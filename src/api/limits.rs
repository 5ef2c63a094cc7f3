//! Request body size limit: 413 for anything over the configured size, whether it
//! announces a `Content-Length` or streams chunks.

use poem::{
    Body, Endpoint, IntoResponse, Request, Response, error::ReadBodyError, http::StatusCode,
};

pub async fn limit_body<E: Endpoint>(
    next: E,
    mut req: Request,
    max: usize,
) -> poem::Result<Response> {
    let declared = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large(max));
    }
    if declared.is_none() && req.header("transfer-encoding").is_some() {
        let bytes = req
            .take_body()
            .into_bytes_limit(max)
            .await
            .map_err(|e| match e {
                ReadBodyError::PayloadTooLarge => too_large(max),
                other => other.into(),
            })?;
        req.set_body(Body::from_bytes(bytes));
    }
    Ok(next.call(req).await?.into_response())
}

fn too_large(max: usize) -> poem::Error {
    poem::Error::from_string(
        format!("request body exceeds {max} bytes"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}
