//! An ALLIO API stand-in (ALLIO publishes no spec): `POST /reserve/list` and
//! `POST /dealcard/list` with `{"ids": [...]}` (at most 100) and an `x-api-key`, answering
//! `{"items": [...]}` with realistic objects (the seed's fields, Cyrillic names, nested
//! `manager` and `client`/`buyer`). Like ALLIO it allows 2 requests per second per client
//! IP and answers 429 beyond that; it can be told to fail or stall the next requests, and
//! it records every request's arrival.
//!
//! Controls (JSON): `POST /_sim/fail {"status": 503, "times": 2}`, `POST /_sim/stall
//! {"ms": 5000, "times": 1}`, `GET /_sim/arrivals` (milliseconds since start, status).

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use poem::{
    EndpointExt, IntoResponse, Request, Response, Route, handler,
    http::StatusCode,
    listener::TcpAcceptor,
    post,
    web::{Data, Json, Path},
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Most ids one request may carry.
pub const MAX_IDS: usize = 100;

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub ip: Option<IpAddr>,
    pub entity: String,
    pub ids: usize,
    pub status: u16,
}

struct State {
    started: Instant,
    api_key: String,
    rate_per_sec: usize,
    failures: VecDeque<StatusCode>,
    stalls: VecDeque<Duration>,
    arrivals: Vec<Arrival>,
}

#[derive(Clone)]
pub struct AllioSimulator {
    state: Arc<Mutex<State>>,
}

#[derive(Deserialize)]
struct ListRequest {
    ids: Vec<i64>,
}

/// Control body: the next `times` requests stall `ms`.
#[derive(Deserialize)]
struct Stall {
    ms: u64,
    times: usize,
}

impl AllioSimulator {
    pub fn new(api_key: &str, rate_per_sec: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                started: Instant::now(),
                api_key: api_key.to_owned(),
                rate_per_sec,
                failures: VecDeque::new(),
                stalls: VecDeque::new(),
                arrivals: Vec::new(),
            })),
        }
    }

    pub fn serve(&self, acceptor: TcpAcceptor) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let app = Route::new()
            .at("/:entity/list", post(list))
            .at("/_sim/fail", post(fail_next))
            .at("/_sim/stall", post(stall_next))
            .at("/_sim/arrivals", poem::get(arrivals))
            .data(self.clone());
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app))
    }

    /// Starts on a free loopback port; returns the simulator and its base URL.
    pub async fn start(api_key: &str) -> std::io::Result<(Self, String)> {
        let (acceptor, base) = super::bind_loopback().await?;
        let sim = Self::new(api_key, 2);
        sim.serve(acceptor);
        Ok((sim, base))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next `times` requests fail with `status`.
    pub fn fail_next(&self, status: StatusCode, times: usize) {
        self.lock()
            .failures
            .extend(std::iter::repeat_n(status, times));
    }

    /// The next `times` requests are answered only after `delay`.
    pub fn stall_next(&self, delay: Duration, times: usize) {
        self.lock().stalls.extend(std::iter::repeat_n(delay, times));
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.lock().arrivals.clone()
    }

    /// Decides the answer's status for a request arriving now, and records it.
    fn admit(
        &self,
        ip: Option<IpAddr>,
        entity: &str,
        key: Option<&str>,
        ids: usize,
    ) -> (StatusCode, Option<Duration>) {
        let mut state = self.lock();
        let now = Instant::now();
        let recent = state
            .arrivals
            .iter()
            .filter(|a| {
                a.ip == ip && a.status != 429 && now.duration_since(a.at) < Duration::from_secs(1)
            })
            .count();
        let status = if recent >= state.rate_per_sec {
            StatusCode::TOO_MANY_REQUESTS
        } else if let Some(failure) = state.failures.pop_front() {
            failure
        } else if key != Some(state.api_key.as_str()) {
            StatusCode::UNAUTHORIZED
        } else if !matches!(entity, "reserve" | "dealcard") {
            StatusCode::NOT_FOUND
        } else if ids > MAX_IDS {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        let stall = if status == StatusCode::OK {
            state.stalls.pop_front()
        } else {
            None
        };
        state.arrivals.push(Arrival {
            at: now,
            ip,
            entity: entity.to_owned(),
            ids,
            status: status.as_u16(),
        });
        (status, stall)
    }
}

const FIRST: [&str; 6] = ["Николай", "Елена", "Андрей", "Ольга", "Сергей", "Мария"];
const MIDDLE: [&str; 6] = [
    "Владимирович",
    "Анатольевна",
    "Петрович",
    "Игоревна",
    "Алексеевич",
    "Сергеевна",
];
const LAST: [&str; 6] = [
    "Омельченко",
    "Дик",
    "Астахов",
    "Смирнова",
    "Кузнецов",
    "Иванова",
];
const CITIES: [&str; 4] = ["Самара", "Москва", "Казань", "Тольятти"];
const STATUSES: [&str; 3] = ["ACTIVE", "CLOSED", "CANCELLED"];

fn person(id: i64) -> Value {
    let i = id.unsigned_abs() as usize;
    json!({
        "id": 900_000 + id,
        "first": FIRST[i % 6],
        "middle": MIDDLE[(i / 6) % 6],
        "last": LAST[(i / 36) % 6],
        // Every seventh phone is the junk ALLIO really sends.
        "phone": if i.is_multiple_of(7) { "#ERROR!".to_owned() } else { format!("+7 927 {:03} {:04}", i % 1000, i % 10_000) },
    })
}

/// A deterministic ALLIO object for `id`.
pub fn object(entity: &str, id: i64) -> Value {
    let i = id.unsigned_abs() as usize;
    let mut object = json!({
        "id": id,
        "status": STATUSES[i % 3],
        "type": if i.is_multiple_of(2) { "PREPAID" } else { "POSTPAID" },
        "till": format!("2025-10-{:02} 20:08:10", 1 + i % 28),
        "space_id": 2000 + (i % 900),
        "comment": format!("Бронь продлена {} до 31.10.2025", LAST[i % 6]),
        "manager": {
            "id": 10 + (i % 5),
            "fullname": format!("{} {} {}", LAST[(i + 1) % 6], FIRST[(i + 1) % 6], MIDDLE[(i + 1) % 6]),
            "city": CITIES[i % 4],
            "is_agency": i.is_multiple_of(5),
        },
    });
    let contact_key = if entity == "dealcard" {
        "buyer"
    } else {
        "client"
    };
    object[contact_key] = person(id);
    if entity == "dealcard" {
        object["amount"] = json!(10_000 + (i % 50) * 1_000);
    }
    object
}

#[handler]
async fn list(
    req: &Request,
    Path(entity): Path<String>,
    sim: Data<&AllioSimulator>,
    body: Json<ListRequest>,
) -> Response {
    let ip = req.remote_addr().as_socket_addr().map(|a| a.ip());
    let (status, stall) = sim.admit(ip, &entity, req.header("x-api-key"), body.ids.len());
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    match status {
        StatusCode::OK => {
            let items: Vec<Value> = body.ids.iter().map(|id| object(&entity, *id)).collect();
            Json(json!({ "items": items })).into_response()
        }
        StatusCode::TOO_MANY_REQUESTS => Response::builder()
            .status(status)
            .header("retry-after", "1")
            .body("rate limit: 2 requests per second"),
        other => other.into_response(),
    }
}

#[handler]
fn fail_next(sim: Data<&AllioSimulator>, body: Json<super::FailNext>) -> Response {
    body.apply(|status, times| sim.fail_next(status, times))
}

#[handler]
fn stall_next(sim: Data<&AllioSimulator>, body: Json<Stall>) -> Response {
    match body.ms {
        ms if body.times <= 1000 && ms <= 600_000 => {
            sim.stall_next(Duration::from_millis(ms), body.times);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "ms ≤ 600000 and times ≤ 1000 required",
        )
            .into_response(),
    }
}

#[handler]
fn arrivals(sim: Data<&AllioSimulator>) -> Json<Value> {
    let state = sim.lock();
    let recorded: Vec<Value> = state
        .arrivals
        .iter()
        .map(|a| json!({ "ms": a.at.duration_since(state.started).as_millis() as u64, "status": a.status, "ids": a.ids, "entity": a.entity }))
        .collect();
    Json(Value::Array(recorded))
}
