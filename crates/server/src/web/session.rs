//! Who is at the browser: the session cookie, the signed-in user, and CSRF tokens.
//!
//! The cookie holds a random token; the database holds its hash. A form's CSRF token is an
//! HMAC of the session token (or, before sign-in, of a random pre-session cookie), so it
//! needs no storage, differs per session, and cannot be forged by another site.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::db::User;
use crate::secrets;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "rushes_session";
pub const PRE_SESSION_COOKIE: &str = "rushes_pre";
pub const SESSION_LIFETIME_MS: i64 = 14 * 24 * 3600 * 1000;

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `Set-Cookie` for a cookie only this site's pages can use.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let text =
        format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("rushes_invalid=1"))
}

/// The MAC behind a CSRF token. The key is the server-wide signing key; the `csrf` prefix
/// keeps these MACs apart from upload URL signatures made with the same key.
fn csrf_mac(key: &[u8], seed: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"csrf\n");
    mac.update(seed.as_bytes());
    mac
}

pub fn csrf_token(key: &[u8], seed: &str) -> String {
    secrets::hex(&csrf_mac(key, seed).finalize().into_bytes())
}

/// Checks a submitted token in constant time.
pub fn csrf_ok(key: &[u8], seed: &str, submitted: &str) -> bool {
    secrets::unhex(submitted).is_some_and(|bytes| csrf_mac(key, seed).verify_slice(&bytes).is_ok())
}

/// What every page's header needs.
pub struct Nav {
    pub user: Option<String>,
    pub csrf: String,
}

/// A signed-in user; pages that need one redirect to the sign-in page otherwise.
pub struct SignedIn {
    pub user: User,
    pub token: String,
    pub csrf: String,
}

impl SignedIn {
    pub fn nav(&self) -> Nav {
        Nav {
            user: Some(self.user.username.clone()),
            csrf: self.csrf.clone(),
        }
    }

    /// The page to answer instead of acting when a form's CSRF token is not this session's.
    #[allow(clippy::result_large_err)] // A response is what axum handlers return.
    pub fn check_csrf(&self, state: &AppState, submitted: &str) -> Result<(), Response> {
        if csrf_ok(&state.web_key, &self.token, submitted) {
            Ok(())
        } else {
            Err(super::error_page(
                self.nav(),
                axum::http::StatusCode::FORBIDDEN,
                "This form expired. Reload the page and try again.",
            ))
        }
    }

    /// The page to answer (404) unless the user may see the project.
    pub async fn check_project(&self, state: &AppState, project_id: &str) -> Result<(), Response> {
        match state.db.can_see_project(&self.user, project_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(super::not_found(self.nav())),
            Err(e) => Err(super::internal(self.nav(), e)),
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || {
            let here = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let next: String = url_escape(here);
            Redirect::to(&format!("/login?next={next}")).into_response()
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        match state.db.session_user(&token).await {
            Ok(Some(user)) => {
                let csrf = csrf_token(&state.web_key, &token);
                Ok(SignedIn { user, token, csrf })
            }
            Ok(None) => Err(to_login()),
            Err(e) => Err(crate::error::ApiError::from(e).into_response()),
        }
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to go after signing in: only paths on this site.
pub fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// Attaches a cookie to a response.
pub fn with_cookie(mut res: Response, value: HeaderValue) -> Response {
    res.headers_mut().append(SET_COOKIE, value);
    res
}
