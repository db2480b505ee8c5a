//! The pairing page (`verification_uri`): a person types the code a camera shows, sees
//! which device asked, picks one of their projects, and approves or denies.
//!
//! A 6-digit code has only about 20 bits, so guessing is limited three ways (RFC 8628
//! §5.1): per signed-in user, per client address, and per code (every wrong guess, by
//! anyone, counts against every live code; five burn it).

use std::net::SocketAddr;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::session::{Nav, SignedIn};
use super::{internal, render, short_time};
use crate::db::{CodeLookup, Decision, Lookup, Project};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "pair.html")]
struct PairPage {
    nav: Nav,
    code: String,
    error: Option<String>,
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "pair_confirm.html")]
struct ConfirmPage {
    nav: Nav,
    device: CodeLookup,
    requested_at: String,
    projects: Vec<Project>,
}

#[derive(Deserialize)]
pub struct CodeQuery {
    code: Option<String>,
}

fn page_with(
    user: &SignedIn,
    code: &str,
    error: Option<&str>,
    done: Option<String>,
    status: StatusCode,
) -> Response {
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(6)
        .collect();
    let mut res = render(&PairPage {
        nav: user.nav(),
        code,
        error: error.map(str::to_owned),
        done,
    });
    *res.status_mut() = status;
    res
}

pub async fn page(user: SignedIn, Query(q): Query<CodeQuery>) -> Response {
    page_with(
        &user,
        q.code.as_deref().unwrap_or(""),
        None,
        None,
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
    /// Missing counts as wrong: refused by the handler (403), not by the form parser.
    #[serde(default)]
    csrf: String,
}

/// Accepts `123456`, `123 456` and `123-456`.
fn normalise(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

pub async fn lookup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: SignedIn,
    Form(form): Form<CodeForm>,
) -> Response {
    if let Err(res) = user.check_csrf(&state, &form.csrf) {
        return res;
    }
    let limited = !state.code_limiter.allow(&format!("user:{}", user.user.id))
        | !state.code_limiter.allow(&format!("ip:{}", peer.ip()));
    if limited {
        let msg = "Too many codes tried. Wait a minute, then try again.";
        return page_with(
            &user,
            &form.code,
            Some(msg),
            None,
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let Some(code) = normalise(&form.code) else {
        return page_with(
            &user,
            &form.code,
            Some("A code is 6 digits, as the device shows it."),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    match state.db.lookup_code(&code).await {
        Ok(Lookup::Live(device)) => {
            let projects = match state.db.visible_projects(&user.user).await {
                Ok(p) => p,
                Err(e) => return internal(user.nav(), e),
            };
            if projects.is_empty() {
                let msg =
                    "You are not a member of any project, so there is nowhere to pair this device.";
                return page_with(&user, &code, Some(msg), None, StatusCode::FORBIDDEN);
            }
            let requested_at = short_time(device.requested_at);
            render(&ConfirmPage {
                nav: user.nav(),
                device,
                requested_at,
                projects,
            })
        }
        Ok(Lookup::Expired) => page_with(
            &user,
            &code,
            Some("That code has expired. Start pairing again on the device for a new one."),
            None,
            StatusCode::GONE,
        ),
        Ok(Lookup::Unknown) => page_with(
            &user,
            "",
            Some("No device is waiting with that code. Check the digits on the device."),
            None,
            StatusCode::NOT_FOUND,
        ),
        Err(e) => internal(user.nav(), e),
    }
}

#[derive(Deserialize)]
pub struct DecideForm {
    code: String,
    project: Option<String>,
    decision: String,
    /// Missing counts as wrong: refused by the handler (403), not by the form parser.
    #[serde(default)]
    csrf: String,
}

pub async fn decide(
    State(state): State<AppState>,
    user: SignedIn,
    Form(form): Form<DecideForm>,
) -> Response {
    if let Err(res) = user.check_csrf(&state, &form.csrf) {
        return res;
    }
    let Some(code) = normalise(&form.code) else {
        return page_with(
            &user,
            "",
            Some("A code is 6 digits."),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let result = if form.decision == "approve" {
        let project_id = form.project.unwrap_or_default();
        if let Err(res) = user.check_project(&state, &project_id).await {
            return res;
        }
        let name = state
            .db
            .project(&project_id)
            .await
            .ok()
            .flatten()
            .map(|p| p.name)
            .unwrap_or_default();
        state
            .db
            .approve_code(&code, &project_id)
            .await
            .map(|d| (d, format!("Approved. The device now uploads to {name}.")))
    } else {
        state
            .db
            .deny_code(&code)
            .await
            .map(|d| (d, "Denied. The device was told no.".to_owned()))
    };
    match result {
        Ok((Decision::Done, message)) => {
            tracing::info!(user = %user.user.username, decision = %form.decision, "pairing decided");
            page_with(&user, "", None, Some(message), StatusCode::OK)
        }
        Ok((Decision::Expired, _)) => page_with(
            &user,
            "",
            Some("That code expired before the decision. Pair again."),
            None,
            StatusCode::GONE,
        ),
        Ok((Decision::Unknown, _)) => page_with(
            &user,
            "",
            Some("That code is no longer waiting for a decision."),
            None,
            StatusCode::NOT_FOUND,
        ),
        Err(e) => internal(user.nav(), e),
    }
}
