//! Signing in and out, the session cookie, and the checks every change passes: a live
//! session, a same-origin request, and the session's CSRF token in the form.
//!
//! The cookie holds a random id (only its hash is stored, see `store::dashboard_sessions`)
//! and is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it)
//! and `Path=/`; it is `Secure` when the request came through a TLS proxy.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use chrono::Utc;
use maud::{html, Markup};

use super::error::DashboardError;
use super::layout;
use super::DashboardState;
use crate::db::enums::UserRole;
use crate::db::models::User;
use crate::store::dashboard_sessions::{close_session, open_session, session_user, SignIn};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pk_session";

/// Who may sign in: the roles that look after pools.
const OPERATOR_ROLES: [UserRole; 2] = [UserRole::Owner, UserRole::TemplateAdmin];

/// The signed-in operator of a request; a request without a live session is sent to the
/// sign-in form.
#[derive(Debug, Clone)]
pub struct Operator {
    pub user: User,
    pub csrf_token: String,
    secret: String,
}

impl Operator {
    pub fn is_owner(&self) -> bool {
        self.user.role == UserRole::Owner
    }

    /// Owners only (the API's rule for the same data or change).
    pub fn require_owner(&self, what: &str) -> Result<(), DashboardError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(DashboardError::Forbidden(format!(
                "only owners may {what}; {} is a {}",
                self.user.username,
                self.user.role.as_str()
            )))
        }
    }

    /// The checks of every change: the request comes from our own pages and its form carries
    /// this session's CSRF token.
    pub fn check_change(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<(), DashboardError> {
        same_origin(headers)?;
        let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
        if sent.is_empty() || !constant_time_eq(sent.as_bytes(), self.csrf_token.as_bytes()) {
            return Err(DashboardError::Forbidden(
                "csrf: the form's token is missing or stale; reload the page and try again"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<DashboardState> for Operator {
    type Rejection = DashboardError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &DashboardState,
    ) -> Result<Self, DashboardError> {
        let secret = session_secret(&parts.headers).ok_or(DashboardError::SignedOut)?;
        match session_user(&state.pool, secret, Utc::now()).await? {
            Some(found) => Ok(Operator {
                user: found.user,
                csrf_token: found.csrf_token,
                secret: secret.to_owned(),
            }),
            None => Err(DashboardError::SignedOut),
        }
    }
}

/// The session id of the request's cookie, if it has a non-empty one.
fn session_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A browser names the page a POST comes from in `Origin`; it must be this host. (A request
/// without it is not a cross-site form post from a current browser; the CSRF token still
/// has to match.)
fn same_origin(headers: &HeaderMap) -> Result<(), DashboardError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    let ours = ["http://", "https://"].iter().any(|scheme| {
        origin.strip_prefix(scheme).is_some_and(|rest| !host.is_empty() && rest == host)
    });
    if ours {
        Ok(())
    } else {
        Err(DashboardError::Forbidden(format!("origin: a change from {origin} is refused")))
    }
}

/// Equal bytes, compared without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A form's fields; a body that is not a form is a 400 naming it.
pub fn form_fields(
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<HashMap<String, String>, DashboardError> {
    form.map(|Form(fields)| fields)
        .map_err(|rejection| DashboardError::bad_input("form", rejection.body_text()))
}

fn cookie(headers: &HeaderMap, value: &str, max_age_secs: i64) -> String {
    let behind_tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let secure = if behind_tls { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    )
}

fn sign_in_form(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p.error role="alert" #sign-in-error { (message) }
        }
        form.sign-in method="post" action="/dashboard/sign-in" {
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" required
                placeholder="pk_…";
            button #sign-in type="submit" { "Sign in" }
        }
        p.hint {
            "Owners and template admins sign in with an API token ("
            code { "poolkeeper tokens create --user NAME" }
            "). The session lasts 12 hours at most, never longer than the token."
        }
    }
}

/// `GET /dashboard/sign-in`.
pub async fn sign_in_page() -> Response {
    layout::bare_page("Sign in", sign_in_form(None)).into_response()
}

/// `POST /dashboard/sign-in` with `token`: opens a session and sets its cookie.
pub async fn sign_in(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, DashboardError> {
    same_origin(&headers)?;
    let fields = form_fields(form)?;
    let token = fields.get("token").map(|t| t.trim()).unwrap_or_default();
    let refuse = |status: StatusCode, message: &str| {
        (status, layout::bare_page("Sign in", sign_in_form(Some(message)))).into_response()
    };
    if token.is_empty() {
        return Ok(refuse(StatusCode::BAD_REQUEST, "token: paste an API token"));
    }
    let now = Utc::now();
    match open_session(&state.pool, token, &OPERATOR_ROLES, now, state.session_lifetime).await? {
        SignIn::UnknownToken => {
            Ok(refuse(StatusCode::UNAUTHORIZED, "token: unknown, expired or revoked token"))
        }
        SignIn::RoleRefused(user) => {
            tracing::info!(user = %user.username, role = user.role.as_str(), "dashboard sign-in refused");
            let message = format!(
                "{} is a {}: only owners and template admins may use the dashboard",
                user.username,
                user.role.as_str()
            );
            Ok(refuse(StatusCode::FORBIDDEN, &message))
        }
        SignIn::Opened(session) => {
            tracing::info!(user = %session.user.username, expires_at = %session.expires_at, "dashboard sign-in");
            let max_age = (session.expires_at - now).num_seconds().max(1);
            let set = cookie(&headers, &session.secret, max_age);
            Ok((
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, set), (header::LOCATION, "/dashboard/pools".to_owned())],
            )
                .into_response())
        }
    }
}

/// `POST /dashboard/sign-out`: ends the session and clears the cookie.
pub async fn sign_out(
    State(state): State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, DashboardError> {
    operator.check_change(&headers, &form_fields(form)?)?;
    close_session(&state.pool, &operator.secret).await?;
    tracing::info!(user = %operator.user.username, "dashboard sign-out");
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie(&headers, "", 0)),
            (header::LOCATION, "/dashboard/sign-in".to_owned()),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; pk_session=abc ; b=2")]);
        assert_eq!(session_secret(&h), Some("abc"));
        assert_eq!(session_secret(&headers(&[("cookie", "pk_session=")])), None);
        assert_eq!(session_secret(&headers(&[("cookie", "pk_sessionx=abc")])), None);
    }

    #[test]
    fn only_our_own_origin_may_post() {
        let ok = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]);
        assert!(same_origin(&ok).is_ok());
        let other = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]);
        assert!(same_origin(&other).is_err());
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(same_origin(&null).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_tls() {
        let plain = cookie(&HeaderMap::new(), "s", 60);
        assert_eq!(plain, "pk_session=s; Path=/; HttpOnly; SameSite=Strict; Max-Age=60");
        let proxied = cookie(&headers(&[("x-forwarded-proto", "https")]), "s", 60);
        assert!(proxied.ends_with("; Secure"), "{proxied}");
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
