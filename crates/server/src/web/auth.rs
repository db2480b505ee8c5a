//! Signing in and out.

use std::net::SocketAddr;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{
    self, Nav, PRE_SESSION_COOKIE, SESSION_COOKIE, SESSION_LIFETIME_MS, SignedIn, cookie, csrf_ok,
    csrf_token, safe_next, set_cookie, with_cookie,
};
use super::{error_page, internal, render};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// The sign-in form, with a pre-session cookie its CSRF token is bound to.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or("/")).to_owned();
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && matches!(state.db.session_user(&token).await, Ok(Some(_)))
    {
        return Redirect::to(&next).into_response();
    }
    let (pre, fresh) = match cookie(&headers, PRE_SESSION_COOKIE) {
        Some(pre) => (pre, false),
        None => (crate::secrets::generate(), true),
    };
    let nav = Nav {
        user: None,
        csrf: csrf_token(&state.web_key, &pre),
    };
    let res = render(&LoginPage {
        nav,
        next,
        error: None,
    });
    if fresh {
        with_cookie(res, set_cookie(PRE_SESSION_COOKIE, &pre, 3600))
    } else {
        res
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    /// Missing counts as wrong: refused by the handler (403), not by the form parser.
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let pre = cookie(&headers, PRE_SESSION_COOKIE).unwrap_or_default();
    let nav = || Nav {
        user: None,
        csrf: csrf_token(&state.web_key, &pre),
    };
    if pre.is_empty() || !csrf_ok(&state.web_key, &pre, &form.csrf) {
        return error_page(
            nav(),
            StatusCode::FORBIDDEN,
            "This form expired. Reload the sign-in page and try again.",
        );
    }
    let next = safe_next(&form.next).to_owned();
    if !state.login_limiter.allow(&peer.ip().to_string()) {
        let page = LoginPage {
            nav: nav(),
            next,
            error: Some("Too many attempts. Wait a minute, then try again.".into()),
        };
        let mut res = render(&page);
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return res;
    }
    let user = match state.db.user_by_name(form.username.trim()).await {
        Ok(user) => user,
        Err(e) => return internal(nav(), e),
    };
    let password = form.password;
    let verified = match user {
        Some(user) => {
            let stored = user.password_hash.clone();
            // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
            let ok =
                tokio::task::spawn_blocking(move || crate::passwords::verify(&password, &stored))
                    .await
                    .unwrap_or(false);
            ok.then_some(user)
        }
        None => None,
    };
    let Some(user) = verified else {
        let page = LoginPage {
            nav: nav(),
            next,
            error: Some("Wrong user name or password.".into()),
        };
        let mut res = render(&page);
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        return res;
    };
    let token = match state.db.create_session(&user.id, SESSION_LIFETIME_MS).await {
        Ok(token) => token,
        Err(e) => return internal(nav(), e),
    };
    tracing::info!(user = %user.username, "signed in");
    let res = Redirect::to(&next).into_response();
    let res = with_cookie(
        res,
        set_cookie(SESSION_COOKIE, &token, SESSION_LIFETIME_MS / 1000),
    );
    with_cookie(res, set_cookie(PRE_SESSION_COOKIE, "", 0))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    /// Missing counts as wrong: refused by the handler (403), not by the form parser.
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    user: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(res) = user.check_csrf(&state, &form.csrf) {
        return res;
    }
    if let Err(e) = state.db.end_session(&user.token).await {
        return internal(user.nav(), e);
    }
    with_cookie(
        Redirect::to("/login").into_response(),
        session::set_cookie(SESSION_COOKIE, "", 0),
    )
}
