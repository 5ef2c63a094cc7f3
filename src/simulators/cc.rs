//! A remote favourites server speaking the Conference Compass protocol
//! (`GET /getUserFavorites`, `POST /postUserFavorites`, Bearer user tokens), with
//! controls to seed users and to make the next answers fail.
//!
//! Controls (JSON): `PUT /_sim/users/{token}` with a list of items seeds a user;
//! `GET /_sim/users/{token}` reads one; `POST /_sim/fail` `{"status": 503, "times": 2}`
//! makes the next answers fail with that status.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use poem::{
    EndpointExt, IntoResponse, Request, Response, Route, get, handler,
    http::StatusCode,
    listener::TcpAcceptor,
    post, put,
    web::{Data, Json, Path},
};
use syncline_domain::favourites::{
    ItemId,
    lww::{Action, Stamp},
    parse_action_date,
};
use syncline_jobs::reconcile::WireItem;

type Items = BTreeMap<ItemId, Stamp>;

#[derive(Default)]
struct State {
    users: HashMap<String, Items>,
    failures: VecDeque<StatusCode>,
    served: usize,
}

/// A handle on a running simulator.
#[derive(Clone, Default)]
pub struct CcSimulator {
    state: Arc<Mutex<State>>,
}

impl CcSimulator {
    /// Serves on `acceptor` until the returned task is dropped or aborted.
    pub fn serve(&self, acceptor: TcpAcceptor) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let app = Route::new()
            .at("/getUserFavorites", get(list))
            .at("/postUserFavorites", post(apply))
            .at("/_sim/users/:token", put(seed).get(read))
            .at("/_sim/fail", post(fail_next))
            .data(self.clone());
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app))
    }

    /// Starts on a free loopback port; returns the simulator and its base URL.
    pub async fn start() -> std::io::Result<(Self, String)> {
        let (acceptor, base) = super::bind_loopback().await?;
        let sim = Self::default();
        sim.serve(acceptor);
        Ok((sim, base))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates (or replaces) a user with these items.
    pub fn seed_user(&self, token: &str, items: &[WireItem]) -> Result<(), String> {
        let parsed = parse(items)?;
        self.lock().users.insert(token.to_owned(), parsed);
        Ok(())
    }

    /// The user's items, if the user exists.
    pub fn items(&self, token: &str) -> Option<Vec<WireItem>> {
        self.lock().users.get(token).map(wire)
    }

    /// The next `times` protocol requests fail with `status`.
    pub fn fail_next(&self, status: StatusCode, times: usize) {
        self.lock()
            .failures
            .extend(std::iter::repeat_n(status, times));
    }

    /// Protocol requests answered so far (failures included).
    pub fn served(&self) -> usize {
        self.lock().served
    }

    /// The failure due now, or the user the bearer token names.
    fn admit(&self, req: &Request) -> Result<String, StatusCode> {
        let mut state = self.lock();
        state.served += 1;
        if let Some(status) = state.failures.pop_front() {
            return Err(status);
        }
        let token = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .filter(|t| state.users.contains_key(*t))
            .ok_or(StatusCode::UNAUTHORIZED)?;
        Ok(token.to_owned())
    }
}

fn parse(items: &[WireItem]) -> Result<Items, String> {
    items
        .iter()
        .map(|w| {
            let item = ItemId::parse(&w.item).map_err(|e| e.to_string())?;
            let action =
                Action::parse(&w.action).ok_or_else(|| format!("bad action {}", w.action))?;
            let at_ms = parse_action_date(&w.action_date).map_err(|e| e.to_string())?;
            Ok((item, Stamp { action, at_ms }))
        })
        .collect()
}

fn wire(items: &Items) -> Vec<WireItem> {
    items
        .iter()
        .map(|(i, s)| WireItem::from_state(i, s))
        .collect()
}

#[handler]
fn list(req: &Request, sim: Data<&CcSimulator>) -> Response {
    match sim.admit(req) {
        Ok(token) => Json(sim.items(&token).unwrap_or_default()).into_response(),
        Err(failure) => failure.into_response(),
    }
}

#[handler]
fn apply(req: &Request, sim: Data<&CcSimulator>, body: Json<Vec<WireItem>>) -> Response {
    let token = match sim.admit(req) {
        Ok(token) => token,
        Err(failure) => return failure.into_response(),
    };
    let incoming = match parse(&body) {
        Ok(items) => items,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let mut state = sim.lock();
    let items = state.users.entry(token).or_default();
    for (item, stamp) in incoming {
        if items.get(&item).is_none_or(|current| stamp.beats(current)) {
            items.insert(item, stamp);
        }
    }
    Json(wire(items)).into_response()
}

#[handler]
fn seed(Path(token): Path<String>, sim: Data<&CcSimulator>, body: Json<Vec<WireItem>>) -> Response {
    match sim.seed_user(&token, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

#[handler]
fn read(Path(token): Path<String>, sim: Data<&CcSimulator>) -> Response {
    match sim.items(&token) {
        Some(items) => Json(items).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[handler]
fn fail_next(sim: Data<&CcSimulator>, body: Json<super::FailNext>) -> Response {
    body.apply(|status, times| sim.fail_next(status, times))
}
