//! A small read-only dashboard at `/admin/` (server-rendered HTML, no build step): job
//! counts per queue and the latest discarded jobs, each with a replay button.
//! Protected like the admin API: `Authorization: Bearer <admin token>`, or HTTP Basic
//! with the admin token as password (so a browser can sign in). The replay form carries
//! a token derived from the admin token, so other sites cannot submit it.

use std::fmt::Write;

use base64::{Engine, engine::general_purpose::STANDARD};
use poem::{
    Request, Response, handler,
    http::{StatusCode, header},
    web::{Data, Form},
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::{
    job_ops::{self, Action},
    secrets,
};
use syncline_jobs::core::{JobState, store::operator::Filter};

/// The admin token from a Bearer or Basic (password) header.
fn presented_token(req: &Request) -> Option<String> {
    let value = req.header(header::AUTHORIZATION)?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let decoded = STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let (_, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some(password)
}

fn signed_in(req: &Request, state: &AppState) -> bool {
    presented_token(req).is_some_and(|t| state.is_admin_token(&t))
}

fn form_token(state: &AppState) -> String {
    let digest = Sha256::new_with_prefix(state.admin_token_hash)
        .chain_update(b"dashboard-form")
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An error in the project's JSON shape.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(serde_json::json!({ "code": code, "message": message }).to_string())
}

fn sign_in() -> Response {
    let mut response = refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "sign in with the admin token as password",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        poem::http::HeaderValue::from_static("Basic realm=\"syncline admin\""),
    );
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[handler]
pub async fn page(req: &Request, state: Data<&AppState>) -> Response {
    if !signed_in(req, &state) {
        return sign_in();
    }
    let stats = job_ops::stats(&state.pool).await;
    let failed = failed_jobs(&state).await;
    let (Ok(stats), Ok(failed)) = (stats, failed) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable",
        );
    };
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>syncline jobs</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head><body>\
         <h1>syncline jobs</h1><h2>Queues</h2><table id=\"queues\"><tr><th>queue</th><th>jobs by status</th>\
         <th>oldest due</th><th>attempts last hour</th><th>failed last hour</th></tr>",
    );
    for q in &stats {
        let counts: Vec<String> = q.counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let oldest = q
            .oldest_due_secs
            .map_or_else(|| "–".into(), |s| format!("{s:.0} s"));
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{oldest}</td><td>{}</td><td>{}</td></tr>",
            escape(&q.queue),
            escape(&counts.join(", ")),
            q.attempts_last_hour,
            q.failed_attempts_last_hour
        );
    }
    html.push_str(
        "</table><h2>Discarded jobs</h2><table id=\"failed\"><tr><th>job</th><th>queue</th>\
         <th>status</th><th>attempts</th><th>last error</th><th></th></tr>",
    );
    let token = form_token(&state);
    for j in &failed {
        let _ = write!(
            html,
            "<tr><td>{id}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>\
             <form method=\"post\" action=\"/admin/ui/replay\"><input type=\"hidden\" name=\"job_id\" value=\"{id}\">\
             <input type=\"hidden\" name=\"form_token\" value=\"{token}\">\
             <input name=\"reason\" placeholder=\"reason\" required> <button type=\"submit\">Replay</button></form></td></tr>",
            escape(&j.queue),
            escape(&j.status),
            j.attempts,
            j.max_attempts,
            escape(j.last_error.as_deref().unwrap_or("")),
            id = escape(&j.id),
        );
    }
    html.push_str("</table></body></html>");
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .body(html)
}

async fn failed_jobs(state: &AppState) -> Result<Vec<job_ops::JobSummary>, sqlx::Error> {
    let filter = Filter {
        state: Some(JobState::Discarded),
        ..Filter::default()
    };
    job_ops::list(&state.pool, &filter, None, 50).await
}

#[derive(Deserialize)]
pub struct ReplayForm {
    job_id: String,
    reason: String,
    form_token: String,
}

#[handler]
pub async fn replay(req: &Request, state: Data<&AppState>, form: Form<ReplayForm>) -> Response {
    if !signed_in(req, &state) {
        return sign_in();
    }
    if !secrets::hashes_match(form.form_token.as_bytes(), form_token(&state).as_bytes()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this form did not come from the dashboard",
        );
    }
    let reason = form.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a reason of 1 to 500 characters is required",
        );
    }
    let filter = Filter {
        ids: vec![form.job_id.clone()],
        ..Filter::default()
    };
    match job_ops::apply(&state.pool, &filter, Action::Replay, reason).await {
        Ok(_) => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, "/admin/")
            .finish(),
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable",
        ),
    }
}
